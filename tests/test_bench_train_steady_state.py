"""bench/train.py's steady state: the median of the steps that replayed a recorded schedule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _train_metrics import first_steady_step, steady_state  # noqa: E402

DISK = {"best_read_gbps": 1.0, "best_write_gbps": 1.0}
GB = 10**9


def _row(step, seconds, read, write, stall, replayed):
    return {
        "step": step,
        "seconds": seconds,
        "bytes_moved": {"nvme->host": read, "host->nvme": write},
        "stall_seconds": stall,
        "replayed": replayed,
    }


STEPS = [
    _row(0, 40.0, 5 * GB, 4 * GB, 30.0, False),  # records the module order
    _row(1, 30.0, 5 * GB, 4 * GB, 20.0, False),  # records the store's schedule
    _row(2, 12.0, 4 * GB, 4 * GB, 1.2, True),
    _row(3, 11.0, 4 * GB, 3 * GB, 0.0, True),
    _row(4, 50.0, 6 * GB, 4 * GB, 25.0, True),  # an outlier the median ignores
]


def test_first_steady_step_is_the_first_replayed_one():
    assert first_steady_step(STEPS) == 2
    assert first_steady_step([{k: v for k, v in r.items() if k != "replayed"} for r in STEPS]) == 2


def test_steady_state_is_the_median_of_the_replayed_steps():
    out = steady_state(STEPS, DISK, compute_seconds=5.0)
    st = out["steady"]
    assert out["steady_steps"] == [2, 3, 4]
    assert st["step_seconds"] == 12.0
    assert out["bytes_per_step"] == {"read": 4 * GB, "write": 4 * GB, "total": 8 * GB}
    assert st["floor_seconds"] == pytest.approx(8.0)  # I/O bound: 4 + 4 s at 1 GB/s
    assert st["ratio"] == pytest.approx(12.0 / 8.0)
    assert st["stall_fraction"] == pytest.approx(0.1)  # median of 0.1, 0, 0.5
    assert st["read_gbps"] == pytest.approx(4 / 12)  # median of 4/12, 4/11, 6/50
    assert out["first_step_stall_fraction"] == pytest.approx(0.75)


def test_steady_state_refuses_a_run_that_never_replayed():
    with pytest.raises(ValueError, match="run more steps"):
        steady_state(STEPS[:2], DISK, compute_seconds=5.0)
