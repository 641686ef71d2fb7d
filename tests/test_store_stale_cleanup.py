"""Scratch swap files are removed at close, and those of dead processes at the next start."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind
from tiermem.store.nvme import HEADER_BYTES, SWAP_MAGIC


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def scratch_header(pid: int) -> bytes:
    """The header a scratch store of process ``pid`` writes at the start of its file."""
    meta = json.dumps({"store_id": "x", "stripe": 0, "stripes": 1, "pid": pid, "unit": 4096})
    return (SWAP_MAGIC + meta.encode() + b"\n").ljust(HEADER_BYTES, b"\0")


def test_scratch_files_go_at_close(tmp_path):
    swap = tmp_path / "s"
    store = TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(swap,)))
    store.register("w", 100, torch.float32)
    (name,) = os.listdir(swap)
    assert name == f"tiermem-{os.getpid()}-0.swap"
    store.close()
    assert os.listdir(swap) == []


def test_stale_files_of_dead_processes_are_removed(tmp_path):
    swap = tmp_path / "s"
    swap.mkdir()
    pid = dead_pid()
    stale = swap / f"tiermem-{pid}-0.swap"
    stale.write_bytes(scratch_header(pid) + b"x" * 8192)
    live = swap / f"tiermem-{os.getpid()}-7.swap"  # a live store of this process
    live.write_bytes(b"y")
    other = swap / "notes.txt"
    other.write_text("keep")
    # a dead pid whose file is still locked (e.g. a reused pid's child holds it)
    locked = swap / f"tiermem-{pid}-1.swap"
    locked.write_bytes(scratch_header(pid))
    fd = os.open(locked, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(swap,))) as store:
            assert store.tier(TierKind.NVME).removed_stale == [stale]
            assert not stale.exists()
            assert live.exists() and other.exists() and locked.exists()
    finally:
        os.close(fd)


def test_two_stores_in_one_directory_do_not_collide(tmp_path):
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path / "s",))
    with TensorStore(cfg) as a, TensorStore(cfg) as b:
        a.register("w", 10, torch.float32, init=torch.ones(10))
        b.register("w", 10, torch.float32, init=torch.zeros(10))
        assert len(os.listdir(tmp_path / "s")) == 2
        assert a.fetch("w", "host").wait().sum() == 10


def test_only_files_with_tiermem_header_of_that_pid_are_removed(tmp_path):
    swap = tmp_path / "s"
    swap.mkdir()
    pid = dead_pid()
    users = swap / f"tiermem-{pid}-0.swap"  # our name, not our content
    users.write_bytes(b"a user's data" * 1000)
    empty = swap / f"tiermem-{pid}-1.swap"  # made, header never written
    empty.touch()
    other_pid = swap / f"tiermem-{pid}-2.swap"  # a header naming another process
    other_pid.write_bytes(scratch_header(pid + 1))
    ours = swap / f"tiermem-{pid}-3.swap"
    ours.write_bytes(scratch_header(pid))
    with TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(swap,))) as store:
        assert store.tier(TierKind.NVME).removed_stale == [ours]
    assert users.read_bytes() == b"a user's data" * 1000
    assert empty.exists() and other_pid.exists()


CRASHING_STORE = """
import os, signal, sys, torch
from tiermem.store import StoreConfig, TensorStore
store = TensorStore(StoreConfig(host_bytes=1 << 16, nvme_paths=(sys.argv[1],)))
for i in range(8):
    store.register(f"t{i}", 1 << 14, torch.float32, init=torch.full((1 << 14,), float(i)))
store.write_back()
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_swap_file_of_a_killed_process_is_removed_by_the_next_store(tmp_path):
    swap = tmp_path / "s"
    res = subprocess.run([sys.executable, "-c", CRASHING_STORE, str(swap)], timeout=120)
    assert res.returncode == -9
    (left,) = os.listdir(swap)  # kill -9: close() never ran
    assert left.startswith("tiermem-") and left != f"tiermem-{os.getpid()}-0.swap"
    with TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(swap,))) as store:
        assert [p.name for p in store.tier(TierKind.NVME).removed_stale] == [left]
        assert os.listdir(swap) == [f"tiermem-{os.getpid()}-0.swap"]
