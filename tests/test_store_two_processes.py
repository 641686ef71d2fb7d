"""Two processes on the same swap directory never corrupt each other.

A persistent store (one table and one swap file per directory) locks its
directories: a second process is refused with an error naming the directory
and the holder's pid, and gets in once the holder closes or is killed.
Scratch stores make pid-named files, so two processes may share a directory:
each reads back exactly what it wrote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore, TierKind

H = TierKind.HOST
N = 200_000  # fp32: 800 KB, four exceed the 1 MiB host budget


def cfg_for(tmp_path, *, persistent: bool) -> StoreConfig:
    return StoreConfig(
        host_bytes=1 << 20,
        nvme_paths=(str(tmp_path / "a"), str(tmp_path / "b")),
        stripe_unit=64 << 10,
        persistent=persistent,
        prefetch_bytes=0,
    )


# The other process: opens the store, writes tensors filled with `value`,
# says "ready", waits for a line on stdin, reads them all back and checks.
HOLDER = """
import sys, torch
from tiermem.store import StoreConfig, TensorStore, TierKind
cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=({a!r}, {b!r}), stripe_unit=64 << 10,
                  persistent={persistent}, prefetch_bytes=0)
with TensorStore(cfg) as store:
    for i in range(4):
        store.register(f"t{{i}}", {n}, torch.float32, init=torch.full(({n},), {value} + i))
    store.write_back()
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(4):
        ok = torch.equal(store.fetch(f"t{{i}}", TierKind.HOST).wait(),
                         torch.full(({n},), {value} + i))
        store.release(f"t{{i}}")
        print(f"t{{i}}", "ok" if ok else "CORRUPT", flush=True)
"""


def start_holder(tmp_path, *, persistent: bool, value: float) -> subprocess.Popen:
    code = HOLDER.format(
        a=str(tmp_path / "a"), b=str(tmp_path / "b"), persistent=persistent, n=N, value=value
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"holder did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc


def finish_holder(proc: subprocess.Popen) -> list[str]:
    out, err = proc.communicate("go\n", timeout=60)
    assert proc.returncode == 0, err[-2000:]
    return out.split("\n")


def test_second_process_on_a_persistent_store_is_refused(tmp_path):
    holder = start_holder(tmp_path, persistent=True, value=1.0)
    try:
        with pytest.raises(StoreError) as err:
            TensorStore(cfg_for(tmp_path, persistent=True))
        msg = str(err.value)
        assert str(tmp_path / "a") in msg and f"pid {holder.pid}" in msg, msg
        assert "tiermem.lock" in msg
        # nor may a reopen through TensorStore.open get in
        with pytest.raises(StoreError, match=f"pid {holder.pid}"):
            TensorStore.open(cfg_for(tmp_path, persistent=True))
    finally:
        lines = finish_holder(holder)
    assert lines[:4] == [f"t{i} ok" for i in range(4)]  # the refused opens changed nothing
    # the holder closed: now this process gets in and sees the holder's tensors
    with TensorStore(cfg_for(tmp_path, persistent=True)) as store:
        assert sorted(store.names()) == [f"t{i}" for i in range(4)]
        for i in range(4):
            assert torch.equal(store.fetch(f"t{i}", H).wait(), torch.full((N,), 1.0 + i))
            store.release(f"t{i}")


def test_lock_of_a_killed_holder_is_released(tmp_path):
    holder = start_holder(tmp_path, persistent=True, value=5.0)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    # killed without closing: the directory is free again, with what write_back committed
    with TensorStore(cfg_for(tmp_path, persistent=True)) as store:
        assert sorted(store.names()) == [f"t{i}" for i in range(4)]
        for i in range(4):
            assert torch.equal(store.fetch(f"t{i}", H).wait(), torch.full((N,), 5.0 + i))
            store.release(f"t{i}")
    lock = tmp_path / "a" / "tiermem.lock"
    assert lock.read_text().strip() == str(os.getpid())
    assert (lock.stat().st_mode & 0o777) == 0o600


def test_scratch_stores_of_two_processes_share_a_directory(tmp_path):
    holder = start_holder(tmp_path, persistent=False, value=100.0)
    try:
        with TensorStore(cfg_for(tmp_path, persistent=False)) as store:
            # the other process is alive: its files are not taken for stale ones
            assert store.tier(TierKind.NVME).removed_stale == []
            for i in range(4):
                store.register(f"t{i}", N, torch.float32, init=torch.full((N,), -1.0 - i))
            store.write_back()
            lines = finish_holder(holder)
            for i in range(4):
                assert torch.equal(store.fetch(f"t{i}", H).wait(), torch.full((N,), -1.0 - i))
                store.release(f"t{i}")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.communicate()
    assert lines[:4] == [f"t{i} ok" for i in range(4)]
    assert os.listdir(tmp_path / "a") == [] and os.listdir(tmp_path / "b") == []
