"""At an accumulation boundary without clipping, groups are updated as their gradients land
during backward (the trajectory tests check the values); with clipping they wait for step()."""

from __future__ import annotations

import pytest
import torch
from zero_helpers import config, make_batches, make_model

import tiermem


def _changed_by_backward(cfg: dict) -> tuple[bool, bool]:
    """Whether backward alone changed the parameters; whether step() then changed them
    (on the second step: the first shows the engine one backward per step)."""
    engine, _, _, _ = tiermem.initialize(model=make_model(), config=cfg)
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()
    before = engine.full_state_dict()
    engine.backward(engine(idx, tgt))
    after_backward = engine.full_state_dict()
    engine.step()
    after_step = engine.full_state_dict()
    engine.close()
    by_backward = any(not torch.equal(before[k], after_backward[k]) for k in before)
    by_step = any(not torch.equal(after_backward[k], after_step[k]) for k in before)
    return by_backward, by_step


@pytest.mark.parametrize("stage", [1, 3])
def test_boundary_without_clipping_updates_during_backward(stage):
    assert _changed_by_backward(config(stage=stage, offload="cpu")) == (True, False)


def test_clipping_waits_for_step():
    assert _changed_by_backward(config(stage=3, offload="cpu", clip=1.0)) == (False, True)


def test_first_step_does_not_update_in_backward():
    """The engine cannot know yet whether another backward will follow before step()."""
    engine, _, _, _ = tiermem.initialize(model=make_model(), config=config(stage=3))
    idx, tgt = make_batches(1)[0]
    before = engine.full_state_dict()
    engine.backward(engine(idx, tgt))
    after = engine.full_state_dict()
    engine.close()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_switching_to_two_backwards_after_overlapped_steps_is_refused():
    engine, _, _, _ = tiermem.initialize(model=make_model(), config=config(stage=2))
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()
    engine.backward(engine(idx, tgt))  # updated in backward now
    with pytest.raises(RuntimeError, match="before engine.step"):
        engine.backward(engine(idx, tgt))
    engine.close()
