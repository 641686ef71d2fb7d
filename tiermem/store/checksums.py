"""CRC32C of the store's transfers, computed beside the caller's thread.

[Note: the store checksums every extent it writes and verifies every extent
it reads (several GB per step out of core). Done inline, that work sat on the
caller's thread between a read's completion and the fetch that waits for it,
and before every write's submission. Here one worker thread computes it
(the native CRC releases the GIL): a write is submitted at once and its CRC
computed while the disk writes (the buffer does not change while it is being
written); a read is verified as soon as the store sees it completed, while
the caller computes. The store waits on the result where it waited on the
inline computation, so a mismatch raises the same error from the same call.]
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from tiermem.checksum import crc32c


def _timed_crc(buf: torch.Tensor) -> tuple[int, float]:
    t0 = time.perf_counter()
    value = crc32c(buf)
    return value, time.perf_counter() - t0


class ChecksumWorker:
    """One background thread computing CRC32Cs of host buffers, started on first use."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, buf: torch.Tensor) -> Future[tuple[int, float]]:
        """Start the CRC32C of ``buf`` (kept alive until done): ``(crc, seconds)``.

        The caller must not free or change ``buf`` before the result is taken.
        """
        try:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tiermem-crc")
            return self._pool.submit(_timed_crc, buf)
        except RuntimeError:
            # [Note: no new threads once the interpreter shuts down, when a store
            #  left open is closed (and its dirty tensors written) by its
            #  finalizer: the CRC is then computed here.]
            return self.now(buf)

    @staticmethod
    def now(buf: torch.Tensor) -> Future[tuple[int, float]]:
        """The CRC32C of ``buf`` computed on the caller's thread, as a done future."""
        done: Future[tuple[int, float]] = Future()
        done.set_result(_timed_crc(buf))
        return done

    def close(self) -> None:
        """Stop the thread (after the work already submitted). Idempotent."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
