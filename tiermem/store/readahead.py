"""How far ahead of the caller the store reads: the prefetch window, in bytes.

[Note: a fixed window is either too short where compute between fetches is
short against the reads (the disk idles while the caller waits on a read
issued too late) or holds host memory for nothing. The window starts at
``StoreConfig.prefetch_bytes`` and grows each time the caller waits on a
read the prefetch did issue (it was issued too late) by the bytes the disk
reads in that wait at its measured bandwidth: had the read been issued that
many bytes earlier in the order, it would have landed in time. It never
grows past half the host tier, so what the caller holds and the copies kept
for write-behind still fit; a pass without a late prefetch gives back a
quarter of the growth.]
"""

from __future__ import annotations

__all__ = ["ReadAhead"]

#: weight of the newest read in the bandwidth estimate
_BW_WEIGHT = 0.25


class ReadAhead:
    """The prefetch window of one store: ``base`` bytes, grown by late prefetches up to ``cap``."""

    def __init__(self, base: int, cap: int) -> None:
        self.base = max(int(base), 0)
        self.cap = max(int(cap), self.base)
        self.window = self.base
        self.read_bps = 0.0  # measured NVMe read bandwidth (0: not yet)
        self.late = 0  # prefetches waited on, in total
        self._late_in_pass = 0

    def on_read(self, nbytes: int, seconds: float) -> None:
        """A read of ``nbytes`` from NVMe took ``seconds`` from issue to completion."""
        if nbytes <= 0 or seconds <= 0:
            return
        bps = nbytes / seconds
        self.read_bps = (
            bps if not self.read_bps else self.read_bps + _BW_WEIGHT * (bps - self.read_bps)
        )

    def on_late(self, nbytes: int, waited: float) -> None:
        """The caller waited ``waited`` seconds for a prefetched copy of ``nbytes``."""
        if self.base <= 0:
            return  # prefetch is off
        self.late += 1
        self._late_in_pass += 1
        short = self.read_bps * waited if self.read_bps else nbytes
        self.window = min(self.cap, self.window + max(int(short), 1))

    def end_pass(self) -> None:
        """A pass ended: without a late prefetch in it, shrink toward ``base``."""
        if not self._late_in_pass:
            self.window -= (self.window - self.base) // 4
        self._late_in_pass = 0
