"""Which fetched copies stay resident until their next fetch: a replay of the
recorded schedule under the store's eviction rule.

The store evicts the copy needed farthest in the future (Belady's rule over
the recorded schedule, which repeats every pass). :func:`plan_keeps` plays
that rule over the recording with a byte capacity and reports, for each
fetch, whether the copy it brings in is still there at its next fetch. The
store writes a released dirty copy home early (write-behind) only when the
plan says it will be evicted before it is needed again: a copy that stays
resident across passes (part of the optimizer state, on a host tier a little
smaller than the whole state) is then not rewritten every step.

[Note: the replay runs three cycles of the recording and keeps the middle
one: the first fills the tier from empty, the third resolves the next fetch
of the middle cycle's last copies. Sizes are the tier's footprints; a copy
larger than the capacity is never kept. Copies the caller holds (fetched and
not yet released, as recorded) are not evicted, as in the store: a plan that
ignored them kept copies the store then had to evict, dirty.]
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping, Sequence

__all__ = ["plan_keeps"]


def _next_fetches(entries: Sequence[Hashable], cycles: int) -> list[int]:
    """For each position ``t`` of ``cycles`` repetitions, where the same key is
    fetched next (a position past the end when never)."""
    total = len(entries) * cycles
    nxt = [total] * total
    last: dict[Hashable, int] = {}
    for t in range(total - 1, -1, -1):
        key = entries[t % len(entries)]
        nxt[t] = last.get(key, total)
        last[key] = t
    return nxt


def plan_keeps(
    entries: Sequence[Hashable],
    sizes: Mapping[Hashable, int],
    capacity: int,
    releases: Sequence[int | None] | None = None,
) -> list[bool]:
    """``keep[p]``: the copy fetched at position ``p`` of the cyclic ``entries``
    is still resident at its next fetch, evicting the farthest-needed copy
    whenever ``capacity`` bytes would be exceeded. Keys missing from ``sizes``
    take no room.

    ``releases[p]``: how many fetches of the pass were made when the fetch at
    ``p`` was released (None: held past the end of the pass, taken as held
    for one whole cycle); a copy is not evicted while a fetch of it is held.
    Without ``releases`` every fetch is released before the next one.
    """
    n = len(entries)
    if n == 0:
        return []
    cycles = 3
    nxt = _next_fetches(entries, cycles)
    hold = [1] * n  # fetches a fetch stays held for, counting itself
    if releases is not None:
        hold = [n if r is None else max(1, r - p) for p, r in enumerate(releases)]
    keep = [False] * n
    resident: dict[Hashable, int] = {}  # key -> position of its latest fetch
    held_until: dict[Hashable, int] = {}  # key -> first position at which it is released
    heap: list[tuple[int, int, Hashable]] = []  # (-next fetch, latest fetch, key)
    used = 0
    for t in range(n * cycles):
        key = entries[t % n]
        size = int(sizes.get(key, 0))
        if key in resident:
            if n <= resident[key] < 2 * n:
                keep[resident[key] - n] = True
        elif size > capacity:
            continue  # never resident: its fetches are not kept
        else:
            held: list[tuple[int, int, Hashable]] = []
            while used + size > capacity and heap:
                item = heapq.heappop(heap)
                _, fetched, victim = item
                if resident.get(victim) != fetched:
                    continue  # stale: the victim was fetched again since
                if held_until.get(victim, 0) > t:
                    held.append(item)  # in use: not evictable now
                    continue
                del resident[victim]
                used -= int(sizes.get(victim, 0))
            for item in held:
                heapq.heappush(heap, item)
            used += size  # (over the capacity when everything else is held)
        resident[key] = t
        held_until[key] = max(held_until.get(key, 0), t + hold[t % n])
        heapq.heappush(heap, (-nxt[t], t, key))
    return keep
