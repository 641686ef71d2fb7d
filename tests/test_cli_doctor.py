"""`tiermem doctor`: every check reported, problems with a fix, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tiermem import doctor
from tiermem.cli import main


def _json(capsys, argv: list[str]) -> tuple[int, dict]:
    rc = main(argv)
    return rc, json.loads(capsys.readouterr().out)


def test_json_names_every_check_and_the_directory(tmp_path, capsys):
    rc, doc = _json(capsys, ["doctor", str(tmp_path), "--json"])
    assert rc == 0
    assert doc["schema"] == doctor.SCHEMA and doc["ok"] is True
    checks = {f["check"]: f for f in doc["findings"]}
    for name in (
        "native library",
        "CPU Adam SIMD path",
        "async I/O interfaces",
        "offload directory",
        "free disk",
        "pinned memory limit (ulimit -l)",
        "host memory",
        "torch",
        "GPU",
    ):
        assert name in checks, name
    d = checks["offload directory"]["data"]
    assert d["path"] == str(tmp_path) and d["o_direct"] is True  # ext4 here
    assert not any(p.name.startswith(".tiermem-doctor") for p in tmp_path.iterdir())
    for f in doc["findings"]:
        assert f["status"] in ("ok", "warn", "fail")
        assert (f["fix"] != "") == (f["status"] != "ok"), f


def test_missing_directory_fails_with_exit_1(tmp_path, capsys):
    rc, doc = _json(capsys, ["doctor", str(tmp_path / "nope"), "--json"])
    assert rc == 1 and doc["ok"] is False
    bad = [f for f in doc["findings"] if f["status"] == "fail"]
    assert [f["check"] for f in bad] == ["offload directory"]
    assert "does not exist" in bad[0]["detail"]


def test_filesystem_refusing_odirect_is_a_warning_with_a_fix(no_direct_dir, capsys):
    rc, doc = _json(capsys, ["doctor", str(no_direct_dir), "--json"])
    assert rc == 0
    f = next(f for f in doc["findings"] if f["check"] == "offload directory")
    assert f["status"] == "warn" and f["data"]["o_direct"] is False
    assert "O_DIRECT" in f["fix"]


def test_forced_scalar_simd_is_reported():
    env = {**os.environ, "TIERMEM_SIMD": "scalar"}
    out = subprocess.run(
        [sys.executable, "-m", "tiermem.cli", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    f = next(f for f in json.loads(out.stdout)["findings"] if f["check"] == "CPU Adam SIMD path")
    assert f["status"] == "warn" and f["data"]["simd"] == "scalar"


def test_broken_library_fails_but_doctor_still_reports(tmp_path):
    fake = tmp_path / "libtiermem_native.so"
    fake.write_bytes(b"not an ELF file")
    env = {**os.environ, "TIERMEM_LIBRARY": str(fake)}
    out = subprocess.run(
        [sys.executable, "-m", "tiermem.cli", "doctor", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    lib = doc["findings"][0]
    assert lib["check"] == "native library" and lib["status"] == "fail"
    assert "pip install" in lib["fix"]
    # the checks that need no library still ran
    assert {"host memory", "torch"} <= {f["check"] for f in doc["findings"]}


def test_human_output_lists_checks(tmp_path, capsys):
    assert main(["doctor", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "native library" in out and "offload directory" in out


@pytest.mark.parametrize("argv", [["doctor", "--bogus"], ["doctor", "a", "b"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
