"""Activation checkpointing (non-reentrant) in the engine, with stage 3 and host checkpoints."""

from __future__ import annotations

import pytest
from zero_helpers import config, make_batches, make_model, max_rel_diff, reference_losses

import tiermem


@pytest.mark.parametrize(
    "stage,offload,cpu_checkpointing", [(2, "none", False), (3, "cpu", False), (3, "none", True)]
)
def test_checkpointed_blocks_recompute_and_match_torch(stage, offload, cpu_checkpointing):
    model = make_model()
    calls = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda m, a: calls.append(1))
    cfg = config(
        stage=stage,
        offload=offload,
        extra={"activation_checkpointing": {"cpu_checkpointing": cpu_checkpointing}},
    )
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    assert engine.activation_checkpointing.cpu_checkpointing is cpu_checkpointing
    model.checkpoint_fn = engine.checkpoint
    losses = []
    for idx, tgt in make_batches(20):
        loss = engine(idx, tgt)
        losses.append(float(loss.detach()))
        engine.backward(loss)
        engine.step()
    assert len(calls) == 20 * 2 * 2  # two blocks, each run again in backward
    assert max_rel_diff(losses, reference_losses()) <= 1e-5
    engine.close()
