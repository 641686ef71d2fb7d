"""Prefetch overlaps I/O with compute (FSDP-style test with a fake slow disk).

Each NVMe read takes LATENCY seconds on a serial fake disk (submitted reads
queue behind each other, completing in the background); each tensor's
"compute" also takes LATENCY. Without prefetch a pass costs about
2 x n x LATENCY, with prefetch about (n + 1) x LATENCY. The test compares the
two totals measured in the same process; no absolute time is asserted.
"""

from __future__ import annotations

import time

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind

H = TierKind.HOST
LATENCY = 0.03
TENSORS = 8
NUMEL = 64 << 10  # 256 KiB fp32


class SlowRead:
    """Wraps the real requests of one read; done only after the fake disk is."""

    def __init__(self, reqs, ready_at):
        self.reqs = reqs
        self.ready_at = ready_at
        # what the store checks a finished request against
        self.op, self.offset, self.path = "read", reqs[0].offset, reqs[0].path
        self.nbytes = sum(r.nbytes for r in reqs)

    def done(self):
        return time.perf_counter() >= self.ready_at and all(r.done() for r in self.reqs)

    def wait(self):
        delay = self.ready_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return sum(r.wait() for r in self.reqs)


def slow_disk(store, monkeypatch):
    nvme = store.tier(TierKind.NVME)
    real = nvme.submit_read
    free_at = [0.0]

    def submit_read(extent, buf):
        start = max(time.perf_counter(), free_at[0])
        free_at[0] = start + LATENCY
        return [SlowRead(real(extent, buf), free_at[0])]

    monkeypatch.setattr(nvme, "submit_read", submit_read)


def timed_pass(store):
    names = [f"t{i}" for i in range(TENSORS)]
    t0 = time.perf_counter()
    store.begin_pass()
    for i, name in enumerate(names):
        t = store.fetch(name, H).wait()
        assert t[0].item() == float(i)
        time.sleep(LATENCY)  # compute
        store.release(name)
    store.end_pass()
    return time.perf_counter() - t0


def run(tmp_path, monkeypatch, prefetch_bytes):
    cfg = StoreConfig(
        host_bytes=4 * 4 * NUMEL,
        nvme_paths=(tmp_path / f"swap{prefetch_bytes}",),
        prefetch_bytes=prefetch_bytes,
    )
    with TensorStore(cfg) as store:
        for i in range(TENSORS):
            store.register(f"t{i}", NUMEL, torch.float32, init=torch.full((NUMEL,), float(i)))
        slow_disk(store, monkeypatch)
        timed_pass(store)  # records the schedule
        before = store.telemetry.snapshot()
        seconds = timed_pass(store) + timed_pass(store)
        after = store.telemetry.snapshot()
    return seconds, {
        k: after[k] - before[k]
        for k in ("prefetch_hits", "cache_hits", "prefetch_misses", "stall_seconds")
    }


def test_prefetch_total_time_is_at_most_the_baseline(tmp_path, monkeypatch):
    baseline, base_stats = run(tmp_path, monkeypatch, prefetch_bytes=0)
    overlapped, pf_stats = run(tmp_path, monkeypatch, prefetch_bytes=2 * 4 * NUMEL)
    assert base_stats["prefetch_hits"] == 0 and base_stats["prefetch_misses"] > 0
    # every fetch of the replayed passes was prefetched (or kept by next-use eviction)
    assert pf_stats["prefetch_misses"] == 0
    assert pf_stats["prefetch_hits"] + pf_stats["cache_hits"] == 2 * TENSORS
    assert pf_stats["prefetch_hits"] >= TENSORS
    assert pf_stats["stall_seconds"] < base_stats["stall_seconds"]
    assert overlapped <= baseline, (overlapped, baseline)
