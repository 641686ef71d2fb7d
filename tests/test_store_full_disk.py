"""A full swap disk is a clear error, and nothing stored earlier is lost."""

from __future__ import annotations

import pytest
import torch

from tiermem.store import Residency, StoreConfig, StoreError, TensorStore, TierKind

H = TierKind.HOST
N = 128 << 10  # fp32: 512 KiB


def test_full_tmpfs(small_tmpfs):
    swap = small_tmpfs / "swap"
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(swap,), stripe_unit=64 << 10)
    with TensorStore(cfg) as store:
        stored = []
        with pytest.raises(StoreError) as err:
            for i in range(64):  # 32 MiB into a 4 MiB filesystem
                store.register(f"t{i}", N, torch.float32, init=torch.full((N,), float(i)))
                stored.append(f"t{i}")
        name = f"t{len(stored)}"
        msg = str(err.value)
        assert f"'{name}'" in msg and str(swap) in msg
        assert "needs" in msg or "No space" in msg
        assert 3 <= len(stored) < 8
        assert name not in store.names() and store.names() == stored
        for i, n in enumerate(stored):
            assert torch.equal(store.fetch(n, H).wait(), torch.full((N,), float(i)))
            store.release(n)

        # rewriting needs a new extent: fails, the dirty data stays in memory
        t = store.fetch("t0", H).wait()
        t.fill_(-1.0)
        store.release("t0", dirty=True)
        with pytest.raises(StoreError, match="'t0'"):
            store.write_back()
        assert store.info("t0")["states"][H] is Residency.DIRTY
        store.drop(stored[-1])  # make room
        store.write_back()
        assert store.info("t0")["states"][H] is Residency.CLEAN
        for n in stored[1:-1]:  # push t0 out of memory, read it from disk
            store.fetch(n, H).wait()
            store.release(n)
        assert store.info("t0")["states"][H] is Residency.ABSENT
        assert torch.equal(store.fetch("t0", H).wait(), torch.full((N,), -1.0))
