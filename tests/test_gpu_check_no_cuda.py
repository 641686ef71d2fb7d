"""bench/gpu_check.py (and its shell wrapper) on a machine without CUDA: it says so and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OUT=str(tmp_path / "out"))
    env["PYTHON"] = sys.executable
    return env


def test_script_says_it_needs_a_gpu_and_exits_zero(tmp_path):
    scratch = tmp_path / "nvme"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--nvme-dir", str(scratch)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "needs a CUDA GPU" in proc.stdout
    # nothing was run: no scratch directory, no report
    assert not scratch.exists()
    assert not (tmp_path / "out").exists()


def test_wrapper_builds_nothing_without_a_gpu(tmp_path):
    stage = tmp_path / "stage"
    env = _env(tmp_path) | {"GPU_CHECK_STAGE": str(stage)}
    proc = subprocess.run(
        [str(REPO / "bench" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "needs a CUDA GPU" in proc.stdout
    assert not stage.exists()
