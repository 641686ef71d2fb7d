"""`tiermem bench`: JSON schema, one-line errors, exit codes, no files left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

TIERMEM = [sys.executable, "-m", "tiermem.cli"]


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*TIERMEM, *args], capture_output=True, text=True, timeout=timeout)


def test_quick_json_schema(tmp_path):
    res = run_cli("bench", "--quick", "--size", "8M", "--json", str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["schema"] == "tiermem.bench/1"
    assert out["directory"] == str(tmp_path.resolve())
    assert out["filesystem"] == "ext4" or isinstance(out["filesystem"], str)
    assert out["o_direct"] is True and "O_DIRECT" in out["o_direct_reason"]
    assert out["file_size"] == 8 << 20 and out["free_bytes"] > 0
    assert set(out["probe"]) == {"io_uring", "libaio"}
    # --quick: 2 block sizes x 2 queue depths x (write, read), the auto-chosen backend
    assert len(out["results"]) == 8
    for r in out["results"]:
        assert r["op"] in ("read", "write")
        assert r["backend"] == "io_uring"
        assert r["bytes"] == 8 << 20 and r["seconds"] > 0
        assert r["gbps"] == pytest.approx(r["bytes"] / r["seconds"] / 1e9, rel=1e-3)
        assert r["iops"] == pytest.approx(r["bytes"] / r["block_size"] / r["seconds"], rel=0.02)
        lat = r["latency_us"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["p999"]
    best = out["best"]
    assert (best["block_size"], best["queue_depth"]) in {
        (256 << 10, 8),
        (256 << 10, 32),
        (1 << 20, 8),
        (1 << 20, 32),
    }
    aio = out["aio_config"]["aio"]
    assert aio["block_size"] == best["block_size"] and aio["queue_depth"] == best["queue_depth"]
    assert list(tmp_path.iterdir()) == []  # its file is gone


def test_human_output_ends_with_aio_section(tmp_path):
    res = run_cli("bench", "--quick", "--size", "4M", "--backends", "threads", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "threads" in res.stdout and "GB/s" in res.stdout
    tail = res.stdout[res.stdout.index('"aio": {') :]
    section = json.loads("{" + tail + "}")
    assert section["aio"]["queue_depth"] in (8, 32)


@pytest.mark.parametrize(
    "args, needle",
    [
        (("bench", "/nonexistent/dir"), "does not exist"),
        (("bench", "--size", "64T", "."), "not enough free space"),
        (("bench", "/etc/hostname"), "is not a directory"),
    ],
)
def test_directory_problems_are_one_line(args, needle):
    res = run_cli(*args)
    assert res.returncode == 1
    assert needle in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_full_filesystem_is_one_line(small_tmpfs):
    res = run_cli("bench", "--quick", "--size", "16M", str(small_tmpfs))
    assert res.returncode == 1
    assert "not enough free space" in res.stderr and "Traceback" not in res.stderr
    assert list(small_tmpfs.iterdir()) == []


def test_unwritable_directory_as_unprivileged_user(request):
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    # pytest's tmp_path sits under a 0700 directory; use one that 'nobody' can traverse.
    ro = Path(tempfile.mkdtemp(prefix="tiermem-ro-", dir="/tmp"))
    os.chmod(ro, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(ro, ignore_errors=True))
    code = (
        "import os, sys, importlib.machinery, tiermem.cli, tiermem.diskbench, rich.console, "
        "rich.progress, rich.table; from tiermem._native import native; native.lib; "
        "os.setgid(65534); os.setuid(65534); "
        f"sys.exit(tiermem.cli.main(['bench', '--quick', {str(ro)!r}]))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stderr
    assert "not writable" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("bench", "--size", "lots", "."),
        ("bench", "--backends", "spdk", "."),
        ("bench", "--block-sizes", "1000", "."),
        ("frobnicate",),
    ],
)
def test_usage_errors_exit_2(args):
    res = run_cli(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.strip()


def test_no_command_prints_help_and_exits_2():
    res = run_cli()
    assert res.returncode == 2 and "bench" in res.stderr


def test_interrupt_removes_the_file(tmp_path):
    proc = subprocess.Popen(
        [
            *TIERMEM,
            "bench",
            "--size",
            "256M",
            "--block-sizes",
            "64K",
            "--queue-depths",
            "1",
            "--backends",
            "threads",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not any(tmp_path.iterdir()):
        assert time.monotonic() < deadline and proc.poll() is None, (
            proc.stderr.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.01)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert list(Path(tmp_path).iterdir()) == []
