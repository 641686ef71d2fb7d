"""Scratch swap files are removed at close, and those of dead processes at the next start."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


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
    stale = swap / f"tiermem-{dead_pid()}-0.swap"
    stale.write_bytes(b"x" * 8192)
    live = swap / f"tiermem-{os.getpid()}-7.swap"  # a live store of this process
    live.write_bytes(b"y")
    other = swap / "notes.txt"
    other.write_text("keep")
    # a dead pid whose file is still locked (e.g. a reused pid's child holds it)
    locked = swap / f"tiermem-{dead_pid()}-1.swap"
    locked.write_bytes(b"z")
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
