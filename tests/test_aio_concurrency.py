"""Many requests in flight from several threads; progress without the caller."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import BACKENDS

from tiermem.aio import AioConfig, AioFile
from tiermem.buffers import HostBufferPool


@pytest.mark.parametrize("backend", BACKENDS)
def test_many_requests_from_threads(tmp_path, backend):
    pool = HostBufferPool(64 << 20)
    chunk, per_thread, nthreads = 64 << 10, 24, 4
    cfg = AioConfig(backend=backend, block_size=16 << 10, queue_depth=16)
    errors: list[BaseException] = []
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        f.allocate(chunk * per_thread * nthreads)

        def worker(tid: int) -> None:
            try:
                bufs = [pool.allocate(chunk) for _ in range(per_thread)]
                reqs = []
                for i, b in enumerate(bufs):
                    b.tensor().fill_((tid * per_thread + i) % 251)
                    reqs.append(f.submit_write(b.tensor(), (tid * per_thread + i) * chunk))
                for r in reqs:
                    assert r.wait() == chunk
                outs = [pool.allocate(chunk) for _ in range(per_thread)]
                reqs = [
                    f.submit_read(o.tensor(), (tid * per_thread + i) * chunk)
                    for i, o in enumerate(outs)
                ]
                for r in reqs:
                    r.wait()
                for i, o in enumerate(outs):
                    assert (o.tensor() == (tid * per_thread + i) % 251).all()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors


def test_request_progresses_without_waiting(tmp_path):
    """The engine thread completes a request while the caller only polls."""
    pool = HostBufferPool(16 << 20)
    buf = pool.allocate(8 << 20)
    with AioFile(
        tmp_path / "f.bin", "w+", config=AioConfig(block_size=1 << 20, queue_depth=2)
    ) as f:
        req = f.submit_write(buf.tensor(), 0)
        deadline = time.monotonic() + 30
        while not req.done():
            assert time.monotonic() < deadline
            time.sleep(0.001)
        assert req.wait() == buf.nbytes
        assert f.inflight == 0
        assert f.pieces_submitted == 8


def test_queue_depth_bounds_inflight(tmp_path):
    pool = HostBufferPool(16 << 20)
    buf = pool.allocate(16 << 20)
    cfg = AioConfig(backend="threads", block_size=64 << 10, queue_depth=3)
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        req = f.submit_write(buf.tensor(), 0)
        peak = 0
        while not req.done():
            peak = max(peak, f.inflight)
        req.wait()
    assert 1 <= peak <= 3


def test_close_waits_for_outstanding_requests(tmp_path):
    pool = HostBufferPool(16 << 20)
    buf = pool.allocate(4 << 20)
    buf.tensor().fill_(9)
    f = AioFile(tmp_path / "f.bin", "w+")
    f.submit_write(buf.tensor(), 0)  # never waited on by the caller
    f.close()
    data = (tmp_path / "f.bin").read_bytes()
    assert len(data) == 4 << 20 and set(data) == {9}
