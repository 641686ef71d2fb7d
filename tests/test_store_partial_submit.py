"""A striped transfer whose submission fails part way raises only after the pieces
already issued have finished: the caller then releases the extent and the host buffer,
which must not happen under I/O still in flight (issue 18, item 12)."""

from __future__ import annotations

import errno
import threading
import time

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore, TierKind

N = 100_000  # fp32, 400 KB: several 64 KiB stripe units on each of the two swap files
HOLD_S = 0.5


def test_failed_submit_waits_for_issued_pieces(tmp_path):
    cfg = StoreConfig(
        host_bytes=1 << 20,
        nvme_paths=(str(tmp_path / "a"), str(tmp_path / "b")),
        stripe_unit=64 << 10,
        prefetch_bytes=0,
    )
    with TensorStore(cfg) as store:
        first, second = (s.file for s in store._nvme.stripes)
        issued = []
        submit_first = first.submit_write

        def recording_submit(buf, offset=0):
            req = submit_first(buf, offset)
            issued.append(req)
            return req

        def failing_submit(buf, offset=0):
            raise OSError(errno.EIO, f"injected: submitting to {second.path}")

        # The first swap file's engine is held up (its kernel submissions are refused)
        # for HOLD_S, so its piece is still in flight when the second file refuses.
        first.inject_faults(refuse_submits=1 << 30)
        timer = threading.Timer(HOLD_S, lambda: first.inject_faults(refuse_submits=0))
        first.submit_write = recording_submit
        second.submit_write = failing_submit
        t0 = time.perf_counter()
        timer.start()
        try:
            with pytest.raises(StoreError, match="injected"):
                store.register("t", N, torch.float32, init=torch.ones(N))
            raised_after = time.perf_counter() - t0
            done_when_raised = [r.done() for r in issued]
        finally:
            timer.join()
            del first.submit_write, second.submit_write
        assert issued, "the transfer issued no piece before failing"
        assert all(done_when_raised), "raised with pieces still in flight"
        assert raised_after >= HOLD_S * 0.9
        # The store still works: the extent and buffer were released cleanly.
        value = torch.arange(N, dtype=torch.float32)
        store.register("u", N, torch.float32, init=value)
        assert torch.equal(store.fetch("u", TierKind.HOST).wait(), value)
        store.release("u")
