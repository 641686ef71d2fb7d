"""EIO on a swap file: a StoreError naming file and tensor; no stored data lost."""

from __future__ import annotations

import errno

import pytest
import torch

from tiermem.store import Residency, StoreConfig, StoreError, TensorStore, TierKind

H = TierKind.HOST
N = 64 << 10


def make(tmp_path):
    # room to spare: no write-behind, the dirty copy stays until write_back()
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path / "s",), prefetch_bytes=0)
    store = TensorStore(cfg)
    store.register("a", N, torch.float32, init=torch.ones(N))
    store.register("b", N, torch.float32, init=torch.full((N,), 2.0))
    return store


def test_write_error_keeps_old_extent_and_dirty_copy(tmp_path):
    with make(tmp_path) as store:
        swap = store.tier(TierKind.NVME).stripes[0]
        t = store.fetch("a", H).wait()
        t.fill_(7.0)
        store.release("a", dirty=True)
        old_extent = store.info("a")["extent"]
        swap.file.inject_faults(fail_nth=1, errno=errno.EIO)
        with pytest.raises(StoreError) as err:
            store.write_back("a")
        msg = str(err.value)
        assert "writing tensor 'a'" in msg and str(swap.path) in msg
        assert "Input/output error" in msg and "previous copy is intact" in msg
        assert store.info("a")["extent"] == old_extent
        assert store.info("a")["states"][H] is Residency.DIRTY
        store.write_back("a")  # the fault was one-shot
        assert store.info("a")["extent"] != old_extent
        store.register("c", 4 * N, torch.float32)  # evicts a and b from HOST
        assert store.info("a")["states"][H] is Residency.ABSENT
        assert torch.equal(store.fetch("a", H).wait(), torch.full((N,), 7.0))


def test_read_error_fails_the_fetch_only(tmp_path):
    with make(tmp_path) as store:
        store.register("c", 4 * N, torch.float32)  # evicts a and b
        swap = store.tier(TierKind.NVME).stripes[0]
        swap.file.inject_faults(fail_nth=1, errno=errno.EIO)
        with pytest.raises(StoreError, match=r"reading tensor 'b' .* Input/output error"):
            store.fetch("b", H).wait()
        assert store.info("b")["states"][H] is Residency.ABSENT
        assert torch.equal(store.fetch("b", H).wait(), torch.full((N,), 2.0))
