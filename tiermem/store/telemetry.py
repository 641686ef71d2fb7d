"""Counters and an I/O timeline of the store.

:meth:`StoreTelemetry.snapshot` returns plain numbers (bytes moved per tier
pair, stall seconds, prefetch hits and misses, evictions, peak bytes per
tier); :meth:`StoreTelemetry.write_chrome_trace` writes the transfers and the
caller's stalls as Chrome-trace JSON (open it in https://ui.perfetto.dev or
chrome://tracing), one track per tier pair, so a gap-free I/O track under a
thin stall track shows that I/O overlapped compute.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from tiermem.store.states import TierKind

# [Note: the timeline is bounded so a long run cannot grow it without limit;
#  counters keep counting after it is full.]
MAX_TRACE_EVENTS = 200_000


class StoreTelemetry:
    """What the store did, for users and benchmarks. Not thread-safe: the
    store updates it from the caller's thread only."""

    def __init__(self, tier_stats: Callable[[], dict[str, dict[str, int]]] | None = None) -> None:
        self._tier_stats = tier_stats
        self.t0 = time.perf_counter()
        self.bytes_moved: dict[tuple[TierKind, TierKind], int] = defaultdict(int)
        self.transfers: dict[tuple[TierKind, TierKind], int] = defaultdict(int)
        self.evictions: dict[TierKind, int] = defaultdict(int)
        self.stall_seconds = 0.0
        self.checksum_seconds = 0.0
        self.checksum_bytes = 0
        self.fetches = 0
        self.cache_hits = 0
        self.prefetch_hits = 0
        self.prefetch_misses = 0
        self.prefetches_issued = 0
        self.demand_loads = 0  # fetches that had to start their own load
        self.stalls = 0  # waits for a load still in flight
        self.late_prefetches = 0  # of them, waits for a prefetch issued too late
        self.write_backs = 0
        self.write_behinds = 0  # writes begun at a release, ahead of an eviction
        self.eviction_writes = 0  # dirty host copies whose write only began at eviction
        self.events: list[tuple[str, str, float, float, int]] = []
        self.events_dropped = 0

    def reset(self) -> None:
        """Zero every counter and clear the timeline (peaks stay with the tiers)."""
        self.__init__(self._tier_stats)

    # ---- recording ----
    def _event(self, track: str, name: str, start: float, end: float, nbytes: int) -> None:
        if len(self.events) < MAX_TRACE_EVENTS:
            self.events.append((track, name, start, end, nbytes))
        else:
            self.events_dropped += 1

    def transfer(
        self, src: TierKind, dst: TierKind, name: str, nbytes: int, start: float, end: float
    ) -> None:
        """One copy of ``nbytes`` of tensor ``name`` from ``src`` to ``dst``."""
        self.bytes_moved[(src, dst)] += nbytes
        self.transfers[(src, dst)] += 1
        self._event(f"{src.value}->{dst.value}", name, start, end, nbytes)

    def stall(self, name: str, start: float, end: float) -> None:
        """The caller waited from ``start`` to ``end`` for tensor ``name``."""
        self.stall_seconds += end - start
        self.stalls += 1
        self._event("stall", name, start, end, 0)

    def checksum(self, nbytes: int, seconds: float) -> None:
        self.checksum_bytes += nbytes
        self.checksum_seconds += seconds

    # ---- reporting ----
    def snapshot(self) -> dict:
        """All counters as a JSON-ready dict."""
        pairs = {
            f"{s.value}->{d.value}": n
            for (s, d), n in sorted(
                self.bytes_moved.items(), key=lambda kv: (kv[0][0].value, kv[0][1].value)
            )
        }
        counts = {f"{s.value}->{d.value}": n for (s, d), n in self.transfers.items()}
        return {
            "elapsed_seconds": time.perf_counter() - self.t0,
            "bytes_moved": pairs,
            "transfers": counts,
            "stall_seconds": self.stall_seconds,
            "checksum_seconds": self.checksum_seconds,
            "checksum_bytes": self.checksum_bytes,
            "fetches": self.fetches,
            "cache_hits": self.cache_hits,
            "prefetch_hits": self.prefetch_hits,
            "prefetch_misses": self.prefetch_misses,
            "prefetches_issued": self.prefetches_issued,
            "demand_loads": self.demand_loads,
            "stalls": self.stalls,
            "late_prefetches": self.late_prefetches,
            "evictions": {t.value: self.evictions.get(t, 0) for t in TierKind},
            "write_backs": self.write_backs,
            "write_behinds": self.write_behinds,
            "eviction_writes": self.eviction_writes,
            "tiers": self._tier_stats() if self._tier_stats else {},
            "trace_events": len(self.events),
            "trace_events_dropped": self.events_dropped,
        }

    def chrome_trace(self) -> dict:
        """The timeline in Chrome's trace-event format (complete events, µs)."""
        tracks: dict[str, int] = {}
        out: list[dict] = []
        for track, name, start, end, nbytes in self.events:
            tid = tracks.setdefault(track, len(tracks) + 1)
            ev = {
                "name": name,
                "cat": "stall" if track == "stall" else "io",
                "ph": "X",
                "pid": 1,
                "tid": tid,
                "ts": round((start - self.t0) * 1e6, 3),
                "dur": round(max(end - start, 0.0) * 1e6, 3),
            }
            if nbytes:
                ev["args"] = {"bytes": nbytes}
            out.append(ev)
        meta = [{"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "tiermem store"}}]
        meta += [
            {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": track}}
            for track, tid in tracks.items()
        ]
        return {"traceEvents": meta + out, "displayTimeUnit": "ms"}

    def write_chrome_trace(self, path: str | os.PathLike) -> Path:
        """Write :meth:`chrome_trace` as JSON to ``path``; returns the path."""
        path = Path(path)
        with open(path, "w") as fh:
            json.dump(self.chrome_trace(), fh)
        return path
