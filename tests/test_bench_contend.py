"""bench/train.py --contend N: N busy processes live while a case runs and are gone after."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _contend import busy_processes  # noqa: E402


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_spinners_run_during_the_block_and_are_killed_after():
    with busy_processes(2) as pids:
        assert len(pids) == 2 and os.getpid() not in pids
        time.sleep(0.2)
        assert all(_alive(p) for p in pids)
    assert not any(_alive(p) for p in pids)


def test_spinners_are_killed_when_the_case_raises():
    with pytest.raises(RuntimeError), busy_processes(1) as pids:
        raise RuntimeError("case failed")
    assert not _alive(pids[0])


def test_zero_spinners_and_a_negative_count():
    with busy_processes(0) as pids:
        assert pids == []
    with pytest.raises(ValueError, match="--contend"), busy_processes(-1):
        pass
