"""The prefetch window grows when the caller waits on a prefetch issued too
late (by the bytes the disk reads in that wait), within half the host tier,
and shrinks back over passes without a late prefetch."""

from __future__ import annotations

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind
from tiermem.store.readahead import ReadAhead

H = TierKind.HOST
N = 64 << 10  # fp32: 256 KiB per tensor
NAMES = [f"t{i}" for i in range(6)]


def test_window_grows_by_the_bytes_read_while_waiting():
    ra = ReadAhead(base=1 << 20, cap=8 << 20)
    ra.on_read(1 << 20, 0.001)  # 1 MiB in 1 ms: about 1 GB/s
    ra.on_late(256 << 10, 0.002)  # waited 2 ms: 2 MiB short
    assert ra.window == (1 << 20) + 2 * (1 << 20)
    ra.on_late(256 << 10, 1.0)  # never past the cap
    assert ra.window == 8 << 20
    for _ in range(40):  # passes without a late prefetch
        ra.end_pass()
    assert ra.window < 2 << 20 and ra.window >= 1 << 20


def test_prefetch_off_stays_off():
    ra = ReadAhead(base=0, cap=8 << 20)
    ra.on_late(1 << 20, 1.0)
    assert ra.window == 0


def test_a_late_prefetch_widens_the_store_window(tmp_path, monkeypatch):
    # every read is slowed, so a prefetch issued one fetch ahead is still in flight
    monkeypatch.setenv("TIERMEM_FAULTS", ",".join(f"delay@r{i}:20ms" for i in range(1, 60)))
    cfg = StoreConfig(host_bytes=4 * 4 * N, nvme_paths=(tmp_path / "a",), prefetch_bytes=4 * N)
    with TensorStore(cfg) as store:
        for i, name in enumerate(NAMES):
            store.register(name, N, torch.float32, init=torch.full((N,), float(i)))
        for _ in range(3):
            store.begin_pass()
            for i, name in enumerate(NAMES):
                assert store.fetch(name, H).wait()[0].item() == float(i)
                store.release(name, dirty=True)
            store.end_pass()
        snap = store.telemetry.snapshot()
        assert snap["late_prefetches"] > 0
        assert store.readahead.window > cfg.prefetch_bytes
        assert store.readahead.window <= cfg.host_bytes // 2


def _settle(store: TensorStore) -> None:
    """Let the reads and writes in flight finish, so the telemetry counts them on a
    known side of the reset and of the snapshot, and so which copies are clean (a
    finished write-behind) does not depend on when the disk finished (a prefetch
    issued at the end of a pass finishes whenever the disk does; counting it by
    chance, or evicting by chance around it, made the totals vary)."""
    for load in list(store._loads):
        store._wait_load(load)
    for flush in list(store._flushes):
        store._wait_flush(flush)
    store._pump()


def _reads_per_pass(tmp_path, *, window: int | None) -> int:
    cfg = StoreConfig(host_bytes=5 * 4 * N, nvme_paths=(tmp_path / "a",), prefetch_bytes=4 * N)
    with TensorStore(cfg) as store:
        for i, name in enumerate(NAMES):
            store.register(name, N, torch.float32, init=torch.full((N,), float(i)))
        for p in range(5):
            if window is not None:
                store.readahead.window = window  # as if grown by late prefetches
            if p == 3:
                _settle(store)
                store.telemetry.reset()
            store.begin_pass()
            for i, name in enumerate(NAMES):
                t = store.fetch(name, H).wait()
                assert t[0].item() == float(i + p)
                t.add_(1.0)
                store.release(name, dirty=True)
                _settle(store)  # every step's I/O done before the next: no timing
            store.end_pass()
            _settle(store)
        _settle(store)
        return store.telemetry.snapshot()["bytes_moved"].get("nvme->host", 0)


def test_a_wider_window_reads_no_more_than_the_plan(tmp_path):
    """Read-ahead takes only room the write-behind plan does not keep, so a
    window grown to its cap moves no more bytes per pass than the base one."""
    base = _reads_per_pass(tmp_path / "base", window=None)
    wide = _reads_per_pass(tmp_path / "wide", window=(5 * 4 * N) // 2)
    assert wide <= base, (wide, base)
