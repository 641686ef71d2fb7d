"""Looking ahead for prefetches costs the same per fetch however many copies are cached.

With every tensor resident, the prefetch walk used to pass over the whole rest
of the schedule on each fetch (a resident copy it did not prefetch added
nothing to the bytes ahead), so a pass cost O(n^2). A replayed pass over four
times the tensors must execute at most eight times the store's lines.

[Note: counted, not timed (``sys.settrace`` over tiermem/store).]
"""

from __future__ import annotations

from pathlib import Path

import torch
from test_store_eviction_cost_scaling import N, _lines, _pass

from tiermem.store import StoreConfig, TensorStore


def _replay_lines(tmp_path: Path, tensors: int) -> int:
    cfg = StoreConfig(
        host_bytes=2 * tensors * 4 * N, nvme_paths=(tmp_path,), prefetch_bytes=64 * 4 * N
    )
    names = [f"t{i}" for i in range(tensors)]
    with TensorStore(cfg) as store:
        for i, name in enumerate(names):
            store.register(name, N, torch.float32, init=torch.full((N,), float(i)))
        _pass(store, names)  # records; every copy stays resident (the budget holds all)
        lines = _lines(lambda: _pass(store, names))
        assert store.telemetry.snapshot()["evictions"]["host"] == 0
    return lines


def test_prefetch_walk_cost_per_fetch_does_not_grow_with_resident_copies(tmp_path):
    small = _replay_lines(tmp_path / "small", 300)
    large = _replay_lines(tmp_path / "large", 1200)
    growth = large / small
    assert growth <= 8, f"a replayed pass over 4x the tensors: {growth:.1f}x the lines"
