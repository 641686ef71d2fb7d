"""bench/train.py compares the bytes moved per step with the placement's minimum."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _train_metrics import bytes_against_min, tight_host_bytes  # noqa: E402


def test_ratios_per_direction_and_total():
    out = bytes_against_min({"read": 120, "write": 100}, {"read": 100, "write": 100})
    assert out["read"] == pytest.approx(1.2)
    assert out["write"] == pytest.approx(1.0)
    assert out["total"] == pytest.approx(1.1)
    assert out["met"] is False


def test_within_five_percent_is_met():
    out = bytes_against_min({"read": 104, "write": 101}, {"read": 100, "write": 100})
    assert out["met"] is True


def test_nothing_to_compare_with_a_zero_minimum():
    out = bytes_against_min({"read": 5, "write": 0}, {"read": 0, "write": 0})
    assert out["read"] is None and out["total"] is None and out["met"] is False


def test_tight_host_budget_is_a_share_of_the_state_page_aligned():
    assert tight_host_bytes(1_211_000_000, 0.25) == 302_747_648
    assert tight_host_bytes(1_211_000_000, 0.25) % 4096 == 0
    with pytest.raises(ValueError, match="fraction"):
        tight_host_bytes(100, 0)
