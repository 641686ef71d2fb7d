"""Persistent mode: the table survives close and kill -9, and reopens every tensor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore, TierKind
from tiermem.store import nvme as nvme_mod

H = TierKind.HOST


def cfg_for(tmp_path, **kw):
    base = dict(
        host_bytes=1 << 20,
        nvme_paths=(str(tmp_path / "a"), str(tmp_path / "b")),
        stripe_unit=64 << 10,
        persistent=True,
    )
    base.update(kw)
    return StoreConfig(**base)


def test_close_and_reopen_with_every_tensor(tmp_path):
    gen = torch.Generator().manual_seed(3)
    want = {
        "f32": torch.randn(100_001, generator=gen),
        "bf16": torch.randn(7, generator=gen).bfloat16(),
        "f16": torch.randn(300_000, generator=gen).half(),
    }
    with TensorStore(cfg_for(tmp_path)) as store:
        for name, t in want.items():
            store.register(name, t.numel(), t.dtype, init=t)
        store.register("memory-only", 10, torch.float32, home=H)
    with TensorStore.open(cfg_for(tmp_path, persistent=False)) as store:
        assert sorted(store.names()) == sorted(want)  # host-homed tensors are not kept
        for name, t in want.items():
            got = store.fetch(name, H).wait()
            assert got.dtype == t.dtype and torch.equal(got, t)
            got.add_(1)
            store.release(name, dirty=True)
    with TensorStore(cfg_for(tmp_path)) as store:
        for name, t in want.items():
            assert torch.equal(store.fetch(name, H).wait(), t + 1)
            store.release(name)
        store.drop("bf16")
    with TensorStore(cfg_for(tmp_path)) as store:
        assert sorted(store.names()) == ["f16", "f32"]


def test_wrong_directories_are_refused(tmp_path):
    with TensorStore(cfg_for(tmp_path)) as store:
        store.register("w", 10, torch.float32)
    swapped = cfg_for(tmp_path, nvme_paths=(str(tmp_path / "b"), str(tmp_path / "a")))
    with pytest.raises(StoreError, match="no store table"):
        TensorStore.open(swapped)
    (tmp_path / "b" / "tiermem-table.json").write_bytes(
        (tmp_path / "a" / "tiermem-table.json").read_bytes()
    )
    with pytest.raises(StoreError, match="does not belong to this store as stripe 0"):
        TensorStore.open(swapped)
    with pytest.raises(StoreError, match="has 2 stripes"):
        TensorStore.open(cfg_for(tmp_path, nvme_paths=(str(tmp_path / "a"),)))
    with pytest.raises(StoreError, match="no store table in"):
        TensorStore.open(cfg_for(tmp_path, nvme_paths=(str(tmp_path / "c"),)))
    with TensorStore.open(cfg_for(tmp_path)) as store:  # the original still opens
        assert store.names() == ["w"]


def test_second_process_cannot_open_a_store_in_use(tmp_path):
    with TensorStore(cfg_for(tmp_path)) as store:
        store.register("w", 10, torch.float32)
        store.write_back()
        with pytest.raises(StoreError, match="in use by another process"):
            TensorStore(cfg_for(tmp_path))


def test_failed_table_write_leaves_the_old_table(tmp_path, monkeypatch):
    with TensorStore(cfg_for(tmp_path)) as store:
        store.register("w", 1000, torch.float32, init=torch.ones(1000))
        store.write_back()
        before = (tmp_path / "a" / "tiermem-table.json").read_bytes()
        t = store.fetch("w", H).wait()
        t.fill_(5)
        store.release("w", dirty=True)

        def boom(*a):
            raise OSError(5, "simulated crash before rename")

        monkeypatch.setattr(nvme_mod.os, "replace", boom)
        with pytest.raises(OSError, match="simulated"):
            store.write_back()
        monkeypatch.undo()
        assert (tmp_path / "a" / "tiermem-table.json").read_bytes() == before
        store.write_back()
        after = json.loads((tmp_path / "a" / "tiermem-table.json").read_bytes())
        assert after["tensors"]["w"]["offset"] != json.loads(before)["tensors"]["w"]["offset"]


CHILD = textwrap.dedent(
    """
    import sys, torch
    from tiermem.store import StoreConfig, TensorStore, TierKind
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=tuple(sys.argv[1:3]),
                      stripe_unit=64 << 10, persistent=True)
    store = TensorStore(cfg)
    names = [f"t{i}" for i in range(8)]   # 8 x 256 KiB through a 1 MiB host tier
    for n in names:
        if n not in store.names():
            store.register(n, 64 << 10, torch.float32)
    store.write_back()
    v = 0
    while True:
        v += 1
        for n in names:
            store.fetch(n, TierKind.HOST).wait().fill_(float(v))
            store.release(n, dirty=True)
        store.write_back()
        print(v, flush=True)
    """
)


def test_kill_9_leaves_a_consistent_committed_state(tmp_path):
    paths = [str(tmp_path / "a"), str(tmp_path / "b")]
    for delay in (0.0, 0.021):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, *paths], stdout=subprocess.PIPE, text=True
        )
        try:
            last = 0
            while last < 3:
                line = proc.stdout.readline()
                assert line, "child died"
                last = int(line)
            time.sleep(delay)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        with TensorStore.open(cfg_for(tmp_path)) as store:
            values = set()
            for n in store.names():
                t = store.fetch(n, H).wait()  # checksums verify
                values |= set(t.unique().tolist())
                store.release(n)
            assert len(store.names()) == 8
            assert len(values) == 1, values  # one committed version for all
            assert values.pop() >= last
