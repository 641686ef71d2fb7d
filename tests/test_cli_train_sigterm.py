"""SIGTERM to a running `tiermem train` process: exit 130, scratch removed, no checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_sigterm_cleans_up(tmp_path):
    nvme = tmp_path / "nvme"
    nvme.mkdir()
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tiermem.cli", "train", "--model", "tiny", "--steps", "100000"]
            + ["--nvme-path", str(nvme)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        deadline = time.monotonic() + 120
        # the first step's progress line says training has begun (a SIGTERM
        # during setup exits 130 too, but with no summary to check)
        while "step 1/100000" not in err_path.read_text():
            assert proc.poll() is None, err_path.read_text()
            assert time.monotonic() < deadline, "no first step within 120 s"
            time.sleep(0.2)
        assert list(nvme.glob("*/tiermem_rank0")), "the engine's store directory"
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err_path.read_text()
    assert "(interrupted)" in out and "checkpoint skipped: interrupted" in out
    assert err_path.read_text().strip().splitlines()[-1] == "tiermem: interrupted"
    assert list(nvme.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nvme", "stderr.txt"]
