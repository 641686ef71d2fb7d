"""The planner counts compact Adam states at their size: bf16 moments 8 bytes per
parameter with the master, int8 about 6, against fp32's 12, on every tier and in
the NVMe traffic and optimizer pass of a step."""

from __future__ import annotations

import dataclasses

import pytest
from test_plan_estimate import BF16, GPU, SHAPE

from tiermem.planning import Placement, PlanSettings, estimate


def states_bytes(e, tier):
    items = getattr(e, tier).items
    return next(v for k, v in items.items() if k.startswith("fp32 master + Adam moments"))


@pytest.mark.parametrize("state_dtype,most", [("bf16", 0.75), ("int8", 0.6)])
def test_compact_states_move_fewer_bytes(state_dtype, most):
    where = Placement.PARAMS_OPTIMIZER_NVME
    ref = estimate(SHAPE, GPU, BF16, where)
    got = estimate(SHAPE, GPU, dataclasses.replace(BF16, state_dtype=state_dtype), where)
    n = SHAPE.num_params
    per = {"bf16": 8.0, "int8": 6.0}[state_dtype]
    assert states_bytes(got, "nvme") == pytest.approx(per * n, rel=0.01)
    assert states_bytes(ref, "nvme") == pytest.approx(12 * n, rel=0.001)
    opt_ref = ref.time_parts["nvme_optimizer"]
    assert got.time_parts["nvme_optimizer"] < opt_ref
    # the states' share of a step's traffic shrinks by the promised fraction
    moved = sum(got.nvme_bytes_per_step.values()) - sum(ref.nvme_bytes_per_step.values())
    assert moved == pytest.approx(-2 * (12 - per) * n, rel=0.01)
    cpu = estimate(
        SHAPE, GPU, dataclasses.replace(BF16, state_dtype=state_dtype), Placement.OPTIMIZER_CPU
    )
    assert states_bytes(cpu, "host") <= most * 12 * n
    assert got.time_parts["optimizer"] < ref.time_parts["optimizer"]


def test_unknown_state_dtype_is_refused():
    with pytest.raises(ValueError, match="state_dtype"):
        PlanSettings(state_dtype="fp8")
