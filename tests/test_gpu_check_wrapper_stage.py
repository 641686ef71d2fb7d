"""bench/gpu_check.sh stages the package as its wheel lays it out (tiermem, tiermem.engine, the
library, the headers) and runs the check through it; --allow-cpu stands in for the GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _prebuilt_library() -> str:
    from tiermem._native import find_library

    return str(find_library())


def test_wrapper_stages_the_package_and_runs(tmp_path):
    stage = tmp_path / "stage"
    out = tmp_path / "out"
    env = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        OUT=str(out),
        PYTHON=sys.executable,
        GPU_CHECK_STAGE=str(stage),
        TIERMEM_PREBUILT=_prebuilt_library(),
    )
    args = ["--allow-cpu", "--sections", "correctness", "--small-shape", "128,32,1,2,16",
            "--small-steps", "3", "--nvme-dir", str(tmp_path / "nvme")]  # fmt: skip
    proc = subprocess.run(
        [str(REPO / "bench" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pkg = stage / "pkg" / "tiermem"
    assert (pkg / "libtiermem_native.so").is_file()
    assert (pkg / "engine" / "engine.py").is_file()
    assert (pkg / "include" / "tiermem_aio.h").is_file()
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["env"]["tiermem_library"] == str(pkg / "libtiermem_native.so")
    assert report["sections"]["correctness"]["status"] == "ok"
    # In a Python with no editable install (the GPU machine's), the stage alone serves
    # tiermem and tiermem.engine: drop this venv's editable finder and import from it.
    code = (
        "import sys\n"
        "sys.meta_path = [f for f in sys.meta_path if not hasattr(f, 'known_wheel_files')"
        " and not hasattr(f, 'known_source_files')]\n"
        "import tiermem, tiermem.engine\n"
        "from tiermem import native\n"
        "print(tiermem.__file__, tiermem.engine.__file__, native.available())\n"
    )
    check = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd="/",
        env=dict(os.environ, PYTHONPATH=str(stage / "pkg"), TIERMEM_LIBRARY=""),
        timeout=120,
    )
    assert check.returncode == 0, check.stderr
    init, engine_init, available = check.stdout.split()
    assert init == str(pkg / "__init__.py")
    assert engine_init == str(pkg / "engine" / "__init__.py")
    assert available == "True"  # found beside the package, headers from its include/
