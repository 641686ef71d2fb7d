"""Choosing what to evict costs the same per fetch however many copies are cached.

The store used to rank and sort every cached copy of the tier on each eviction,
so a pass over ``n`` tensors with half of them cached cost O(n^2). A pass over
four times the tensors must execute at most eight times the store's lines,
both while recording (LRU) and while replaying (next use).

[Note: counted, not timed (``sys.settrace`` over tiermem/store), so the
machine's load does not matter.]
"""

from __future__ import annotations

from pathlib import Path

import torch
from line_counts import STORE_CODE, lines_executed

from tiermem.store import StoreConfig, TensorStore, TierKind

N = 1024  # fp32 elements: one 4 KiB block per tensor


def _lines(fn) -> int:
    return lines_executed(fn, STORE_CODE)


def _pass(store: TensorStore, names: list[str]) -> None:
    store.begin_pass()
    for name in names:
        store.fetch(name, TierKind.HOST).wait()
        store.release(name)
    store.end_pass()


def _pass_lines(tmp_path: Path, tensors: int) -> tuple[int, int]:
    cfg = StoreConfig(host_bytes=tensors // 2 * 4 * N, nvme_paths=(tmp_path,), prefetch_bytes=0)
    names = [f"t{i}" for i in range(tensors)]
    with TensorStore(cfg) as store:
        for i, name in enumerate(names):
            store.register(name, N, torch.float32, init=torch.full((N,), float(i)))
        recording = _lines(lambda: _pass(store, names))
        replaying = _lines(lambda: _pass(store, names))
        evictions = store.telemetry.snapshot()["evictions"]
    assert sum(evictions.values()) >= tensors  # every pass evicted: the cost is measured
    return recording, replaying


def test_eviction_cost_per_fetch_does_not_grow_with_cached_copies(tmp_path):
    small = _pass_lines(tmp_path / "small", 100)
    large = _pass_lines(tmp_path / "large", 400)
    for what, a, b in (("recording", small[0], large[0]), ("replaying", small[1], large[1])):
        growth = b / a
        assert growth <= 8, f"a {what} pass over 4x the tensors: {growth:.1f}x the lines ({a}->{b})"
