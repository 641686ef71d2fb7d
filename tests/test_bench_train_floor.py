"""bench/train.py's floor: max(compute-only step, bytes at the disk's best), and the per-layer
scaling of a compute-only step measured on fewer layers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _train_metrics import floor_seconds, io_seconds, scaled_compute  # noqa: E402

DISK = {"best_read_gbps": 2.0, "best_write_gbps": 4.0}


def test_io_seconds_adds_read_and_write_at_their_own_rates():
    assert io_seconds(4e9, 8e9, DISK) == pytest.approx(2.0 + 2.0)


def test_floor_is_io_when_io_bound():
    assert floor_seconds(1.5, 4e9, 8e9, DISK) == pytest.approx(4.0)


def test_floor_is_compute_when_compute_bound():
    assert floor_seconds(5.0, 4e9, 8e9, DISK) == pytest.approx(5.0)


def test_compute_scaled_per_layer():
    assert scaled_compute(3.0, 2, 14) == pytest.approx(21.0)
    assert scaled_compute(3.0, 14, 14) == pytest.approx(3.0)


def test_compute_scaling_refuses_zero_layers():
    with pytest.raises(ValueError, match="layer counts"):
        scaled_compute(3.0, 0, 14)
