"""A prefetch guided by the caller's prediction evicts only copies the prediction
needs later, and the victim order's filter looks past a bounded number of refused
copies (which stay in the order), so such a prefetch costs O(log n)."""

from __future__ import annotations

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind
from tiermem.store.eviction import VictimHeaps
from tiermem.store.records import CopyRecord, EntryRecord
from tiermem.store.states import Residency

H = TierKind.HOST
N = 64 << 10  # fp32 elements: 256 KiB per tensor


def test_prefetch_keeps_a_clean_copy_the_prediction_needs_first(tmp_path):
    cfg = StoreConfig(host_bytes=2 * 4 * N, nvme_paths=(tmp_path / "a",), prefetch_bytes=4 * N)
    with TensorStore(cfg) as store:
        for i in range(4):
            store.register(f"t{i}", N, torch.float32, init=torch.full((N,), float(i)))
        for name in ("t0", "t1"):  # t0 the least recently used
            store.fetch(name, H).wait()
            store.release(name)
        for load in list(store._loads):
            store._wait_load(load)
        store.predict([("t0", H), ("t3", H), ("t1", H)])  # t0 is needed before t3
        for load in list(store._loads):
            store._wait_load(load)
        assert store.info("t0")["states"][H] is Residency.CLEAN
        assert store.info("t1")["states"][H] is Residency.ABSENT  # needed after t3: gave room


def _copies(n: int) -> list[tuple[EntryRecord, CopyRecord]]:
    out = []
    for i in range(n):
        c = CopyRecord(H, Residency.CLEAN, last_use=i)
        out.append((EntryRecord(f"t{i}", torch.float32, 1, 4, TierKind.NVME, {H: c}), c))
    return out


def test_a_filter_gives_up_after_max_skipped_and_keeps_the_refused():
    copies = _copies(100)
    order = VictimHeaps(basis=None)
    for e, c in copies:
        order.push(e, c, (False, 0.0, c.last_use))

    def rank(e, c):
        return (False, 0.0, c.last_use)

    seen = []

    def only_last(e, c):
        seen.append(e.name)
        return e.name == "t99"

    assert order.first(H, rank, accept=only_last, max_skipped=16) is None
    assert len(seen) == 17  # the LRU 17, then it gives up
    assert order.first(H, rank, accept=only_last)[0].name == "t99"  # no bound: found
    # the refused copies are still there, in LRU order
    assert order.first(H, rank, accept=lambda e, c: True)[0].name == "t0"


def test_kept_copies_can_be_left_out():
    (e0, c0), (e1, c1) = _copies(2)
    order = VictimHeaps(basis=None)
    order.push(e0, c0, (True, -5.0, 0))  # kept by the write-behind plan
    order.push(e1, c1, (False, -3.0, 1))

    def rank(e, c):
        return (c is c0, -5.0 if c is c0 else -3.0, c.last_use)

    assert order.first(H, rank, accept=lambda e, c: True)[1] is c1
    assert order.first(H, rank, accept=lambda e, c: c is c0)[1] is c0
    assert order.first(H, rank, accept=lambda e, c: c is c0, include_kept=False) is None
