"""Global-norm clipping inside the engine matches torch.nn.utils.clip_grad_norm_."""

from __future__ import annotations

import pytest
from zero_helpers import Reference, config, engine_losses, max_rel_diff, reference_losses


@pytest.mark.parametrize("stage,offload", [(0, "none"), (1, "cpu"), (2, "none"), (3, "cpu")])
def test_clipped_trajectory_matches_torch(stage, offload):
    clipped = reference_losses(Reference(clip=0.05))
    losses = engine_losses(config(stage=stage, offload=offload, clip=0.05))
    assert max_rel_diff(losses, clipped) <= 1e-5
    # the clip is active: without it the trajectory is different
    assert max_rel_diff(clipped, reference_losses()) > 1e-3


def test_engine_reports_the_unclipped_global_norm():
    import torch
    from zero_helpers import make_batches, make_model

    import tiermem

    model = make_model()
    reference = make_model()
    idx, tgt = make_batches(1)[0]
    reference(idx, tgt).backward()
    expected = float(torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.05))
    engine, *_ = tiermem.initialize(model=model, config=config(stage=3, offload="cpu", clip=0.05))
    engine.backward(engine(idx, tgt))
    engine.step()
    assert engine.get_global_grad_norm() == pytest.approx(expected, rel=1e-5)
    engine.close()
