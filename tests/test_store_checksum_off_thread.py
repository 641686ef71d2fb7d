"""The CRC32C of every extent written and read is computed off the caller's
thread (the write is submitted before it), and verification still catches a
flipped byte on the fetch that uses the tensor."""

from __future__ import annotations

import threading

import pytest
import torch
from test_store_corruption import flip_byte

import tiermem.store.checksums
import tiermem.store.paging
from tiermem.store import StoreConfig, StoreCorruptionError, TensorStore, TierKind

H = TierKind.HOST
N = 64 << 10  # fp32: 256 KiB


@pytest.fixture
def crc_threads(monkeypatch):
    """The thread of every CRC32C the store computes, and the writes submitted before it."""
    seen: list[tuple[int, int]] = []  # (thread id, writes submitted so far)
    writes = [0]
    real = tiermem.store.checksums.crc32c

    def spy(buf, value=0):
        seen.append((threading.get_ident(), writes[0]))
        return real(buf, value)

    monkeypatch.setattr(tiermem.store.checksums, "crc32c", spy)
    # the store's own module, where the CRC was once computed inline
    monkeypatch.setattr(tiermem.store.paging, "crc32c", spy, raising=False)
    return seen, writes


def test_crc_is_computed_off_the_callers_thread(tmp_path, crc_threads):
    seen, writes = crc_threads
    cfg = StoreConfig(host_bytes=2 * 4 * N, nvme_paths=(tmp_path / "a",), prefetch_bytes=0)
    with TensorStore(cfg) as store:
        nvme = store.tier(TierKind.NVME)
        real_submit = nvme.submit_write

        def counting_submit(extent, buf):
            writes[0] += 1
            return real_submit(extent, buf)

        nvme.submit_write = counting_submit
        names = [f"t{i}" for i in range(4)]
        for i, name in enumerate(names):
            store.register(name, N, torch.float32, init=torch.full((N,), float(i)))
        for _ in range(2):  # reads from NVMe (only two fit) and dirty write-backs
            for i, name in enumerate(names):
                t = store.fetch(name, H).wait()
                assert t[0].item() == float(i)
                store.release(name, dirty=True)
        main = threading.get_ident()
        assert len(seen) >= 4 + 8  # one per write and one per read at least
        assert all(tid != main for tid, _ in seen), "a CRC32C ran on the caller's thread"
        # each write's CRC was started after its write was submitted
        assert seen[0][1] >= 1


def test_a_flipped_byte_still_raises_on_fetch(tmp_path, crc_threads):
    cfg = StoreConfig(host_bytes=4 * N, nvme_paths=(tmp_path / "a",), prefetch_bytes=0)
    with TensorStore(cfg) as store:
        store.register("a", N, torch.float32, init=torch.ones(N))
        store.register("b", N, torch.float32, init=torch.ones(N))  # evicts a from HOST
        path = flip_byte(store, "a", 1234)
        with pytest.raises(StoreCorruptionError, match=rf"'a'.*checksum mismatch.*{path}"):
            store.fetch("a", H).wait()
        assert store.fetch("b", H).wait()[0].item() == 1.0


def test_crc_still_computed_once_threads_are_refused(monkeypatch):
    """At interpreter exit no thread may start; a store closed by its finalizer
    then still writes its dirty tensors with their CRCs (computed inline)."""
    import concurrent.futures.thread

    from tiermem.checksum import crc32c
    from tiermem.store.checksums import ChecksumWorker

    monkeypatch.setattr(concurrent.futures.thread, "_shutdown", True)
    buf = torch.arange(1000, dtype=torch.float32)
    worker = ChecksumWorker()
    try:
        assert worker.submit(buf).result()[0] == crc32c(buf)
    finally:
        worker.close()
