"""Budgets are never exceeded; pinned and fetched copies are never evicted."""

from __future__ import annotations

import os

import pytest
import torch

from tiermem.store import Residency, StoreBudgetError, StoreConfig, TensorStore, TierKind

H, D = TierKind.HOST, TierKind.DEVICE
KIB = 1 << 10


def test_pinned_copies_stay_and_full_pins_give_a_clear_error(tmp_path):
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path / "s",), prefetch_bytes=0)
    with TensorStore(cfg) as store:
        for i in range(8):
            store.register(f"t{i}", 64 * KIB, torch.float32)  # 256 KiB each
        for i in range(3):
            store.fetch(f"t{i}", H).wait()
            store.release(f"t{i}")
            store.pin(f"t{i}", H)
        for i in range(3, 8):
            store.fetch(f"t{i}", H).wait()
            store.release(f"t{i}")
            assert store.tier(H).used <= 1 << 20
        for i in range(3):
            assert store.info(f"t{i}")["states"][H] is Residency.CLEAN
        held = store.fetch("t7", H)  # held by the caller: cannot be evicted either
        held.wait()
        with pytest.raises(StoreBudgetError) as err:
            store.fetch("t4", H)
        msg = str(err.value)
        assert "HOST tier cannot fit 262144 bytes for tensor 't4'" in msg
        assert "budget 1048576 bytes" in msg and "786432 pinned" in msg
        assert "262144 fetched and not released" in msg
        store.release("t7")
        store.unpin("t0", H)
        store.fetch("t4", H).wait()  # now t0 or t7 can go
        assert store.info("t1")["states"][H] is Residency.CLEAN
        with pytest.raises(Exception, match="not pinned"):
            store.unpin("t0", H)


def test_tensor_larger_than_tier(tmp_path):
    cfg = StoreConfig(device_bytes=64 * KIB, host_bytes=1 << 20, nvme_paths=(tmp_path / "s",))
    with TensorStore(cfg) as store:
        store.register("big", 32 * KIB, torch.float32)
        with pytest.raises(
            StoreBudgetError, match="DEVICE tier cannot fit 131072 bytes.*budget 65536"
        ):
            store.fetch("big", D)
        assert store.tier(D).used == 0
        assert store.info("big")["states"][D] is Residency.ABSENT
    with TensorStore(StoreConfig(host_bytes=1 << 20)) as store:
        with pytest.raises(StoreBudgetError, match="HOST tier"):
            store.register("huge", 1 << 20, torch.float32, home=H)
        assert store.names() == []


def test_nvme_budget(tmp_path):
    cfg = StoreConfig(
        host_bytes=4 << 20,
        nvme_paths=(tmp_path / "a", tmp_path / "b"),
        nvme_bytes=2 << 20,
        stripe_unit=64 * KIB,
    )
    with TensorStore(cfg) as store:
        nv = store.tier(TierKind.NVME)
        assert nv.budget == 2 << 20
        sizes = [(tmp_path / d / f).stat().st_size for d in "ab" for f in os.listdir(tmp_path / d)]
        assert all(s == 4096 + (1 << 20) for s in sizes)  # preallocated up front
        store.register("a", 256 * KIB, torch.float32)  # 1 MiB
        with pytest.raises(
            StoreBudgetError, match="NVME tier: 1228800 bytes needed for tensor 'b', 1048576 of"
        ):
            store.register("b", 300 * KIB, torch.float32)
        assert store.names() == ["a"]
        assert nv.used <= nv.budget
