"""bench/gpu_check.py end to end on the CPU (--allow-cpu, tiny sizes): every section runs, the
JSON report holds the results, one section's failure leaves the others running.

[Note: OMP_NUM_THREADS=1 in the child: torch's intra-op threads spin against the
other test workers on a small shared machine and make the tiny model 5x slower.]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--allow-cpu",
    "--small-shape", "256,64,2,2,32",
    "--transfer-mib", "4",
    "--chunk-mib", "1",
    "--big-steps", "2",
    "--budget-s", "240",
]  # fmt: skip


def run_check(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), *TINY, *extra,
         "--nvme-dir", str(tmp_path / "nvme")],
        capture_output=True,
        text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES="", OUT=str(out), OMP_NUM_THREADS="1"),
        timeout=280,
    )  # fmt: skip
    report = json.loads((out / "gpu_check.json").read_text())
    return proc, report


def test_every_section_runs_and_reports(tmp_path):
    proc, report = run_check(tmp_path, "--big-shape", "512,64,2,2,64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sections = report["sections"]
    assert [sections[s]["status"] for s in ("correctness", "transfer", "big")] == ["ok"] * 3
    corr = sections["correctness"]
    assert corr["steps"] == 20 and corr["max_rel_diff"] <= corr["tolerance"]
    assert corr["losses_engine"][-1] < corr["losses_engine"][0]  # it learns
    assert corr["store"]["write_backs"] > 0  # the NVMe tier was really used
    big = sections["big"]
    assert big["params"] == 512 * 64 + 64 * 64 + 2 * 64 + 2 * (12 * 64 * 64 + 13 * 64)
    assert big["timed_steps"] == 1 and len(big["step_seconds"]) == 2
    assert big["tokens_per_s"] > 0 and 0.0 <= big["io_wait_fraction"] <= 1.0
    assert big["plan"] and "rejected" in big["plan"][0]
    # the table comes last, one row per figure
    tail = proc.stdout.rsplit("== tiermem gpu_check", 1)[1]
    assert "PASS" in tail and "model TFLOPS" in tail and "nvme_read GB/s" in tail
    # the scratch directory it made is gone, the one it was given is not
    assert list((tmp_path / "nvme").iterdir()) == []


def test_a_failing_section_does_not_stop_the_others(tmp_path):
    # heads (3) do not divide hidden (64): the big section fails while building its shape
    proc, report = run_check(tmp_path, "--sections", "big,transfer", "--big-shape", "512,64,2,3,64")
    assert proc.returncode == 1
    sections = report["sections"]
    assert sections["big"]["status"] == "error"
    assert "multiple of heads" in sections["big"]["error"]
    assert sections["big"]["plan"]  # what it had worked out before failing is kept
    assert sections["transfer"]["status"] == "ok"
    assert "correctness" not in sections
    assert "ERROR" in proc.stdout.rsplit("== tiermem gpu_check", 1)[1]


def test_usage_errors_exit_two(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--sections", "warp"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "--sections" in proc.stderr and "correctness" in proc.stderr
