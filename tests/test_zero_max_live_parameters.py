"""stage3_max_live_parameters bounds the parameter elements stage 3 keeps gathered at once."""

from __future__ import annotations

import pytest
from zero_helpers import config, engine_losses, make_model, max_rel_diff, reference_losses

from tiermem.engine.partition import GroupState

STEPS = 3


def _run(max_live: int) -> tuple[int, list[float], int]:
    """Peak gathered elements (seen from every module hook, forward and backward, and by the
    scheduler), the losses, and the largest group's elements."""
    model = make_model()
    peak = [0]
    state = {}

    def gathered(*_args) -> None:
        engine = state.get("engine")
        if engine is None:
            return
        live = sum(
            g.layout.numel
            for g in engine.groups
            if g.state is not GroupState.SHARDED and not g.persistent
        )
        peak[0] = max(peak[0], live)

    for module in model.modules():  # registered before the engine's own hooks: run after them
        module.register_forward_hook(gathered)
        module.register_full_backward_hook(gathered)

    def after_step(engine, _step) -> None:
        state["engine"] = engine
        state["largest"] = max(g.layout.numel for g in engine.groups)
        state["scheduler_peak"] = engine.param_scheduler.peak_live_numel

    cfg = config(
        stage=3,
        extra={
            "zero_optimization": {
                "stage3_prefetch_bucket_size": 10**9,
                "stage3_max_live_parameters": max_live,
            }
        },
    )
    losses = engine_losses(cfg, steps=STEPS, model=model, after_step=after_step)
    return max(peak[0], state["scheduler_peak"]), losses, state["largest"]


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_max_live_parameters_bounds_what_is_gathered():
    bound = 6000
    bounded, losses, largest = _run(bound)
    unbounded, losses_unbounded, _ = _run(10**9)
    # prefetch stops at the bound; a module's own groups (at most the largest) may add to it
    assert bounded <= bound + largest
    assert unbounded > bound + largest  # without the bound, prefetch gathers far ahead
    reference = reference_losses()[:STEPS]
    assert max_rel_diff(losses, reference) <= 1e-5
    assert losses == losses_unbounded
