"""Gradient accumulation: the optimizer steps every gradient_accumulation_steps micro-steps."""

from __future__ import annotations

import pytest
import torch
from zero_helpers import Reference, config, engine_losses, max_rel_diff, reference_losses


@pytest.mark.parametrize("stage,offload", [(1, "none"), (2, "cpu"), (3, "none"), (3, "cpu")])
def test_accumulating_four_micro_steps_matches_torch(stage, offload):
    ref = reference_losses(Reference(steps=6, gas=4))
    params_seen = []

    def after_step(engine, step):
        params_seen.append(engine.global_steps)

    losses = engine_losses(
        config(stage=stage, offload=offload, gas=4), steps=6, after_step=after_step
    )
    assert len(losses) == 24
    assert params_seen == [1, 2, 3, 4, 5, 6]  # one optimizer step per 4 micro-steps
    assert max_rel_diff(losses, ref) <= 1e-5
    # and it is not the same as stepping every micro-step
    assert max_rel_diff(losses, reference_losses(Reference(steps=24))) > 1e-3


def test_micro_steps_between_boundaries_do_not_step():
    from zero_helpers import make_batches, make_model

    import tiermem

    engine, *_ = tiermem.initialize(model=make_model(), config=config(stage=2, gas=3))
    before = engine.full_state_dict()
    for i, (idx, tgt) in enumerate(make_batches(2)):
        assert engine.is_gradient_accumulation_boundary() is False
        engine.backward(engine(idx, tgt))
        engine.step()
        assert engine.global_steps == 0 and engine.micro_steps == i + 1
    after = engine.full_state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert engine.is_gradient_accumulation_boundary()
    engine.close()
