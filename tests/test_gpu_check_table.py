"""The summary table of bench/gpu_check.py: rows from a report, ratios, errors, alignment."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from gpu_check import format_table, max_rel_diff, table_rows  # noqa: E402

REPORT = {
    "sections": {
        "correctness": {
            "status": "mismatch",
            "device": "cuda:0",
            "losses_engine": [8.5, 7.0, 6.25],
            "losses_torch": [8.5, 7.0, 6.0],
            "max_rel_diff": 0.0417,
            "tolerance": 0.01,
        },
        "transfer": {
            "status": "ok",
            "rates_gbps": {
                "nvme_read": {"tiermem": 6.0, "python": 2.0, "torch.load": 1.5},
                "h2d": {"tiermem": 50.0},
            },
            "skipped": ["pipeline baselines: section time budget spent"],
        },
        "big": {"status": "error", "error": "OutOfMemoryError: CUDA out of memory"},
    }
}


def test_rows_carry_results_ratios_and_errors():
    rows = table_rows(REPORT)
    by_metric = {}
    for section, metric, tiermem, baseline, note in rows:
        by_metric.setdefault((section, metric), []).append((tiermem, baseline, note))
    (corr,) = by_metric[("correctness", "loss 1 -> 3 (cuda:0)")]
    assert corr[0] == "8.5000 -> 6.2500"
    assert corr[1] == "8.5000 -> 6.0000 (torch)"
    assert "FAIL" in corr[2] and "4.17e-02" in corr[2]
    reads = by_metric[("transfer", "nvme_read GB/s")]
    assert [(b, n) for _, b, n in reads] == [("2 (python)", "x3.00"), ("1.5 (torch.load)", "x4.00")]
    assert by_metric[("transfer", "h2d GB/s")] == [("50", "-", "")]
    assert by_metric[("transfer", "skipped")][0][2].startswith("pipeline baselines")
    (err,) = by_metric[("big", "ERROR")]
    assert err[2] == "OutOfMemoryError: CUDA out of memory"


def test_table_columns_line_up():
    rows = [("a", "metric one", "1", "2", "x"), ("section-long", "m", "123456", "-", "")]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["section", "metric", "tiermem", "baseline", "note"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    # every column starts at the same offset on every line
    starts = [lines[0].index(h) for h in ("metric", "tiermem", "baseline")]
    assert lines[2][starts[0] :].startswith("metric one")
    assert lines[3][starts[1] :].startswith("123456")
    assert lines[2][starts[2] :].startswith("2")


def test_max_rel_diff():
    assert max_rel_diff([1.0, 2.2], [1.0, 2.0]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="lengths"):
        max_rel_diff([1.0], [1.0, 2.0])
