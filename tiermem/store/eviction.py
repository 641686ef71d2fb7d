"""The order in which the store evicts, kept incrementally.

[Note: choosing a victim used to rank every cached copy of the tier and sort
them, on every eviction: with tens of thousands of small tensors (DeepSpeed's
NVMe test config cut into 100-element sub-groups), a step and a checkpoint cost
O(tensors^2). Here each tier keeps two heaps (copies the write-behind plan keeps
until their next fetch go last, so they have their own) of ``(rank, seq, entry,
copy)``. The pager pushes a copy whenever something its rank or evictability
depends on changes (its state, a release, an unpin, a finished transfer that
held it), so a heap item is current when its ``seq`` is the copy's latest one;
older items are dropped as they surface (lazy invalidation), and the heaps are
compacted when stale items outnumber live ones. A rank is ``(kept, -next_use,
last_use)`` with ``next_use`` counted in fetches since the schedule started
replaying, which does not change as the replay advances; so only a change of
schedule (a new recording, an invalidation) reorders everything, and then the
heaps are rebuilt.]
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable

from tiermem.store.records import CopyRecord, EntryRecord
from tiermem.store.states import TierKind

#: a copy's place in the victim order (smaller goes first): (kept, -next_use, last_use)
Rank = tuple[bool, float, int]
_Item = tuple[Rank, int, EntryRecord, CopyRecord]


class VictimHeaps:
    """Per memory tier, the evictable copies in victim order."""

    def __init__(self, basis: Hashable) -> None:
        #: what the ranks were computed under; a different one needs a rebuild
        self.basis = basis
        self._heaps: dict[TierKind, tuple[list[_Item], list[_Item]]] = {}
        self._live: dict[CopyRecord, tuple[int, Rank, EntryRecord]] = {}
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def push(
        self, e: EntryRecord, c: CopyRecord, rank: Rank | None, *, compact: bool = True
    ) -> None:
        """Note ``c``'s current rank; None: not evictable now (forgotten until pushed again)."""
        if rank is None:
            self._live.pop(c, None)
            return
        seq = next(self._seq)
        self._live[c] = (seq, rank, e)
        heaps = self._heaps.setdefault(c.tier, ([], []))
        heap = heaps[1 if rank[0] else 0]
        heapq.heappush(heap, (rank, seq, e, c))
        if compact and len(heaps[0]) + len(heaps[1]) > 2 * len(self._live) + 64:
            self._compact(c.tier)

    def _compact(self, tier: TierKind) -> None:
        fresh: tuple[list[_Item], list[_Item]] = ([], [])
        for c, (seq, rank, e) in self._live.items():
            if c.tier is tier:
                fresh[1 if rank[0] else 0].append((rank, seq, e, c))
        for heap in fresh:
            heapq.heapify(heap)
        self._heaps[tier] = fresh

    def first(
        self,
        tier: TierKind,
        rank_of: Callable[[EntryRecord, CopyRecord], Rank | None],
        *,
        accept: Callable[[EntryRecord, CopyRecord], bool],
        after: float | None = None,
        include_kept: bool = True,
        max_skipped: int | None = None,
    ) -> tuple[EntryRecord, CopyRecord] | None:
        """The first copy of ``tier`` in victim order that ``accept`` takes, or None.

        ``after``: only copies whose next use comes after this many fetches
        (the ``-rank[1]`` of a copy); None: any. ``include_kept``: False leaves
        out the copies ranked kept (``rank[0]``), their own heap, at no cost.
        ``max_skipped``: give up (None) after ``accept`` refused this many, so a
        filter that refuses most copies costs O(max_skipped log n), not O(n log n);
        the refused copies go back into the heap. ``rank_of`` recomputes a
        copy's rank: a copy whose rank changed without a push is re-ranked,
        one no longer evictable is forgotten.
        """
        heaps = self._heaps.get(tier)
        if heaps is None:
            return None
        for heap in heaps if include_kept else heaps[:1]:
            aside: list[_Item] = []
            found = None
            while heap:
                rank, seq, e, c = heap[0]
                live = self._live.get(c)
                if live is None or live[0] != seq:
                    heapq.heappop(heap)  # superseded by a later push, or forgotten
                    continue
                current = rank_of(e, c)
                if current != rank:
                    heapq.heappop(heap)
                    self.push(e, c, current, compact=False)
                    continue
                if after is not None and -rank[1] <= after:
                    break  # the rest of this heap is needed sooner still
                if not accept(e, c):
                    aside.append(heapq.heappop(heap))
                    if max_skipped is not None and len(aside) > max_skipped:
                        break
                    continue
                found = (e, c)
                break
            for item in aside:
                heapq.heappush(heap, item)
            if found is not None:
                return found
            if max_skipped is not None and len(aside) > max_skipped:
                return None
        return None
