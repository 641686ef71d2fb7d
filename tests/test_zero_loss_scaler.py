"""The dynamic fp16 loss scale: hysteresis, halving, the floor, growth after a clean window."""

from __future__ import annotations

import pytest

from tiermem.engine.precision import (
    DynamicLossScaler,
    PrecisionConfig,
    StaticLossScaler,
    make_scaler,
)


def test_hysteresis_delays_the_first_decrease():
    s = DynamicLossScaler(initial_scale_power=10, window=1000, hysteresis=3, min_scale=1)
    s.update(True)
    s.update(True)
    assert s.scale == 1024  # two overflows used up the hysteresis budget of 3
    s.update(True)
    assert s.scale == 512
    s.update(True)
    assert s.scale == 256  # budget spent: every further overflow halves


def test_scale_grows_after_a_clean_window_and_restores_hysteresis():
    s = DynamicLossScaler(initial_scale_power=4, window=3, hysteresis=2, min_scale=1)
    s.update(True)
    s.update(True)
    assert s.scale == 8
    for _ in range(2):
        s.update(False)
    assert s.scale == 8
    s.update(False)
    assert s.scale == 16 and s.hysteresis_left == 2
    s.update(True)  # an overflow right after growth only spends hysteresis
    assert s.scale == 16


def test_scale_never_goes_below_the_minimum():
    s = DynamicLossScaler(initial_scale_power=2, window=10, hysteresis=1, min_scale=2)
    for _ in range(5):
        s.update(True)
    assert s.scale == 2


def test_state_round_trips():
    s = DynamicLossScaler(initial_scale_power=5, window=4, hysteresis=2)
    s.update(True)
    s.update(False)
    t = DynamicLossScaler()
    t.load_state_dict(s.state_dict())
    assert (t.scale, t.hysteresis_left, t.good_steps) == (32, 1, 1)


def test_make_scaler_by_precision():
    assert make_scaler(PrecisionConfig(kind="bf16")).scale == 1.0
    assert isinstance(make_scaler(PrecisionConfig(kind="fp16", loss_scale=8.0)), StaticLossScaler)
    dyn = make_scaler(PrecisionConfig(kind="fp16", initial_scale_power=12))
    assert isinstance(dyn, DynamicLossScaler) and dyn.scale == 4096
    with pytest.raises(ValueError, match="hysteresis"):
        PrecisionConfig(kind="fp16", hysteresis=0)
