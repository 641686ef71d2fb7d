"""The recorded schedule drives prefetch (in order) and eviction (farthest next use)."""

from __future__ import annotations

import warnings

import pytest
import torch

from tiermem.store import Residency, StoreConfig, StoreScheduleWarning, TensorStore, TierKind
from tiermem.store.states import ScheduleState

H = TierKind.HOST
N = 64 << 10  # fp32 elements: 256 KiB per tensor


def make(tmp_path, *, tensors, host_tensors, prefetch_tensors):
    cfg = StoreConfig(
        host_bytes=host_tensors * 4 * N,
        nvme_paths=(tmp_path / "a", tmp_path / "b"),
        stripe_unit=64 << 10,
        prefetch_bytes=prefetch_tensors * 4 * N,
    )
    store = TensorStore(cfg)
    for i in range(tensors):
        store.register(f"t{i}", N, torch.float32, init=torch.full((N,), float(i)))
    return store


def run_pass(store, names):
    store.begin_pass()
    for name in names:
        t = store.fetch(name, H).wait()
        assert t[0].item() == float(name[1:])
        store.release(name)
    store.end_pass()


def record_reads(store, monkeypatch):
    """Names of tensors read from NVMe, in the order the reads were issued."""
    nvme = store.tier(TierKind.NVME)
    by_offset = {store.info(n)["extent"][0]: n for n in store.names()}
    order = []
    real = nvme.submit_read

    def spy(extent, buf):
        order.append(by_offset[extent.offset])
        return real(extent, buf)

    monkeypatch.setattr(nvme, "submit_read", spy)
    return order


def test_replay_prefetches_in_schedule_order(tmp_path, monkeypatch):
    names = [f"t{i}" for i in range(6)]
    with make(tmp_path, tensors=6, host_tensors=3, prefetch_tensors=2) as store:
        run_pass(store, names)  # records
        assert store.schedule.state is ScheduleState.COMPLETE
        before = store.telemetry.snapshot()
        order = record_reads(store, monkeypatch)
        run_pass(store, names)
        snap = store.telemetry.snapshot()
        hits = snap["prefetch_hits"] - before["prefetch_hits"]
        misses = snap["prefetch_misses"] - before["prefetch_misses"]
        assert hits == 6 and misses == 0
        # t0 and t1 were prefetched when pass 1 ended; the rest in schedule
        # order, then the start of the next pass again
        assert order == ["t2", "t3", "t4", "t5", "t0", "t1"]
        assert store.tier(H).peak <= store.tier(H).budget


def test_eviction_by_next_use_not_lru(tmp_path):
    sched = ["t0", "t1", "t2", "t3", "t0", "t1"]
    with make(tmp_path, tensors=4, host_tensors=3, prefetch_tensors=0) as store:
        run_pass(store, sched)
        # resident now: t3, t0, t1 (LRU order t3 oldest)
        store.begin_pass()
        for name in sched[:3]:  # t0 hit, t1 hit, t2 miss -> evict one
            store.fetch(name, H).wait()
            store.release(name)
        states = {n: store.info(n)["states"][H] for n in ("t0", "t1", "t3")}
        # Belady: t3 is needed next, t1 last -> t1 goes; LRU would evict t3
        assert states["t1"] is Residency.ABSENT
        assert states["t3"] is Residency.CLEAN and states["t0"] is Residency.CLEAN
        for name in sched[3:]:
            store.fetch(name, H).wait()
            store.release(name)
        store.end_pass()


def test_without_schedule_eviction_is_lru(tmp_path):
    sched = ["t0", "t1", "t2", "t3", "t0", "t1"]
    with make(tmp_path, tensors=4, host_tensors=3, prefetch_tensors=0) as store:
        for name in sched + sched[:3]:  # no begin_pass: nothing recorded
            store.fetch(name, H).wait()
            store.release(name)
        assert store.info("t3")["states"][H] is Residency.ABSENT
        assert store.info("t1")["states"][H] is Residency.CLEAN


def test_divergent_pass_warns_invalidates_and_next_pass_records(tmp_path):
    names = [f"t{i}" for i in range(5)]
    with make(tmp_path, tensors=5, host_tensors=3, prefetch_tensors=1) as store:
        run_pass(store, names)
        store.begin_pass()
        store.fetch("t0", H).wait()
        store.release("t0")
        with pytest.warns(StoreScheduleWarning, match="fetch #1 was 't3' in HOST"):
            store.fetch("t3", H).wait()
        store.release("t3")
        assert store.schedule.state is ScheduleState.EMPTY
        issued = store.telemetry.prefetches_issued
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # warned once only
            for name in ("t4", "t1", "t2"):
                store.fetch(name, H).wait()
                store.release(name)
            store.end_pass()
        assert store.telemetry.prefetches_issued == issued  # no prefetch without schedule
        new = ["t4", "t2", "t0"]
        run_pass(store, new)
        assert store.schedule.state is ScheduleState.COMPLETE
        assert store.schedule.entries == [(n, H) for n in new]
