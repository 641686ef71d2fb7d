"""fp16: an overflowing step is skipped and the loss scale lowered; others train normally."""

from __future__ import annotations

import logging

import pytest
import torch
from zero_helpers import (
    Reference,
    config,
    engine_losses,
    make_batches,
    make_model,
    max_rel_diff,
    reference_losses,
)

import tiermem


@pytest.mark.parametrize("stage,offload", [(1, "none"), (2, "cpu"), (3, "cpu")])
def test_overflow_skips_the_step_and_halves_the_scale(stage, offload, caplog):
    # the loss is computed in fp32, but 2**24 times dloss/dlogits (about 1/128 for
    # the target token) does not fit fp16 (max 65504) in the logits' gradient
    cfg = config(
        stage=stage,
        offload=offload,
        precision="fp16",
        extra={"fp16": {"initial_scale_power": 24, "hysteresis": 1}},
    )
    engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    start = engine.full_state_dict()
    masters = {g.index: engine.master_state(g.index)["master"] for g in engine.groups}
    scales = []
    batches = make_batches(12)
    with caplog.at_level(logging.WARNING, logger="tiermem.engine"):
        for idx, tgt in batches:
            scales.append(engine.loss_scale)
            engine.backward(engine(idx, tgt))
            engine.step()
            if engine.skipped_steps < engine.global_steps:
                break
            # skipped: nothing was updated and the gradients were dropped
            after = engine.full_state_dict()
            assert all(torch.equal(start[k], after[k]) for k in start)
            for gi, master in masters.items():
                assert torch.equal(engine.master_state(gi)["master"], master)
            assert not engine.reducer.has_grads
    skipped = engine.skipped_steps
    assert 1 <= skipped < engine.global_steps, "expected overflow first, then a real step"
    assert scales[: skipped + 1] == [2.0 ** (24 - i) for i in range(skipped + 1)]
    assert engine.loss_scale == 2.0 ** (24 - skipped)
    assert caplog.text.count("overflow") == skipped
    assert "16777216 -> 8388608" in caplog.text
    assert not all(torch.equal(start[k], v) for k, v in engine.full_state_dict().items())
    engine.close()


def test_fp16_trajectory_follows_the_fp16_recipe():
    """Without overflow (scale 2**8) the run tracks plain torch fp16 + fp32 masters.

    Loss scaling changes which small fp16 gradients round to zero, so the
    trajectories agree to about 1e-3, not exactly.
    """
    cfg = config(
        stage=3, offload="cpu", precision="fp16", extra={"fp16": {"initial_scale_power": 8}}
    )
    losses = engine_losses(cfg)
    ref = reference_losses(Reference(dtype=torch.float16))
    assert max_rel_diff(losses, ref) <= 5e-3


def test_static_loss_scale_never_changes():
    cfg = config(stage=2, precision="fp16", extra={"fp16": {"loss_scale": 128.0}})
    engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    for idx, tgt in make_batches(3):
        engine.backward(engine(idx, tgt))
        engine.step()
    assert engine.loss_scale == 128.0 and engine.skipped_steps == 0
    engine.close()
