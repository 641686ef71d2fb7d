"""fp16.consecutive_hysteresis reaches the loss scaler and means what DeepSpeed's does: a
step without overflow restores the hysteresis budget, so only overflows in a row (more
than ``hysteresis - 1`` of them) lower the scale."""

from __future__ import annotations

import pytest

from tiermem.engine.precision import make_scaler
from tiermem.engine.settings import engine_settings


def _scaler(consecutive: bool):
    cfg = {
        "train_micro_batch_size_per_gpu": 1,
        "fp16": {
            "enabled": True,
            "initial_scale_power": 8,
            "hysteresis": 2,
            "loss_scale_window": 1000,
            "consecutive_hysteresis": consecutive,
        },
    }
    return make_scaler(engine_settings(cfg, world_size=1).precision)


@pytest.mark.parametrize("consecutive", [False, True])
def test_overflows_apart_lower_the_scale_only_without_consecutive_hysteresis(consecutive):
    scaler = _scaler(consecutive)
    for overflow in (True, False, True, False, True):
        scaler.update(overflow)
    if consecutive:  # each clean step refilled the budget of 2: no overflow came second in a row
        assert scaler.scale == 256.0
    else:  # the budget of 2 was spent by the first overflow; the next two halved the scale
        assert scaler.scale == 64.0


def test_overflows_in_a_row_still_lower_it():
    scaler = _scaler(True)
    for overflow in (True, True, True):
        scaler.update(overflow)
    assert scaler.scale == 64.0
