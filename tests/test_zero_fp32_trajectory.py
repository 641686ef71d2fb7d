"""fp32: every stage and optimizer placement follows plain PyTorch + AdamW step by step."""

from __future__ import annotations

import pytest
from zero_helpers import config, engine_losses, max_rel_diff, reference_losses

CASES = [(0, "none")] + [(s, o) for s in (1, 2, 3) for o in ("none", "cpu")] + [(3, "cpu+param")]


@pytest.fixture(scope="module")
def reference():
    return reference_losses()


@pytest.mark.parametrize("stage,offload", CASES, ids=[f"stage{s}-{o}" for s, o in CASES])
def test_twenty_steps_match_torch_adamw(reference, stage, offload):
    optimizer_device = offload.split("+")[0]
    param_device = "cpu" if offload.endswith("+param") else "none"
    cfg = config(stage=stage, offload=optimizer_device, offload_param=param_device)
    losses = engine_losses(cfg)
    assert len(losses) == len(reference) == 20
    assert reference[-1] < reference[0] - 0.1  # the trajectory moves
    assert max_rel_diff(losses, reference) <= 1e-5
