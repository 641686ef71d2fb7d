"""The recorded access schedule: what the caller fetches, in which order.

The first pass between :meth:`PrefetchSchedule.begin_pass` and
:meth:`~PrefetchSchedule.end_pass` records every ``(name, tier)`` fetched;
later passes replay it. While replaying, the store looks ahead with
:meth:`~PrefetchSchedule.upcoming` to prefetch and asks
:meth:`~PrefetchSchedule.next_use` to evict the copy needed farthest in the
future (Belady's rule, as PatrickStar does with its chunk schedule). A fetch
that differs from the recording warns once, drops the schedule (the store falls
back to LRU and stops prefetching) and the next pass records anew.

Before a recording exists, a :class:`PredictedOrder` given by the caller (the
order it expects to fetch in) stands in for it: prefetch and next-use
eviction follow the prediction, whose position follows the fetches made.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Iterator

from tiermem.store.errors import StoreError, StoreScheduleWarning
from tiermem.store.states import SCHEDULE_TRANSITIONS, ScheduleState, TierKind

Key = tuple[str, TierKind]


class PredictedOrder:
    """The caller's guess of its fetch order, used until a recording replaces it.

    [Note: a guess is never checked like a recording is. A fetch it expects
    a little ahead (within ``reach`` entries) moves its position past that
    entry; one it expected a little behind (a fetch that came later than
    guessed), or not nearby at all (a tied weight gathered again, a
    checkpoint's read), leaves the position alone. A far jump on such a
    fetch would make everything in between look needed only next pass.]
    """

    def __init__(self, keys: list[Key], *, reach: int = 32) -> None:
        self.entries: list[Key] = list(keys)
        self.position = 0
        self.reach = reach
        self._uses: dict[Key, list[int]] = {}
        for i, key in enumerate(self.entries):
            self._uses.setdefault(key, []).append(i)

    def observe(self, key: Key) -> None:
        """Move past the expected fetch of ``key`` if it is just ahead (and
        nearer than its last expected fetch behind)."""
        uses = self._uses.get(key)
        if not uses:
            return
        n, pos = len(self.entries), self.position
        i = bisect.bisect_left(uses, pos)
        ahead = (uses[i] if i < len(uses) else uses[0] + n) - pos  # 0: the one expected
        behind = pos - (uses[i - 1] if i > 0 else uses[-1] - n)
        if ahead < self.reach and ahead <= behind:
            self.position = (pos + ahead + 1) % n

    def upcoming(self, limit: int | None = None) -> Iterator[tuple[int, Key]]:
        """(distance, key) of the expected fetches from the position on, one cycle at most."""
        n = len(self.entries)
        count = n if limit is None else min(n, limit)
        for d in range(count):
            yield d, self.entries[(self.position + d) % n]

    def next_use(self, key: Key) -> int | None:
        """Expected fetches until ``key`` is fetched (0: next); None if never."""
        uses = self._uses.get(key)
        if not uses:
            return None
        i = bisect.bisect_left(uses, self.position)
        if i < len(uses):
            return uses[i] - self.position
        return len(self.entries) - self.position + uses[0]


class PrefetchSchedule:
    """Record / complete / replay / invalidate an ordered list of fetches."""

    def __init__(self) -> None:
        self.state = ScheduleState.EMPTY
        self.entries: list[Key] = []
        self.position = 0  # index of the next expected fetch while replaying
        #: fetches replayed since this object was made (never reset: a clock for next uses)
        self.replayed = 0
        self.in_pass = False
        self.passes_recorded = 0
        self.invalidations = 0
        self._uses: dict[Key, list[int]] = {}
        #: per recorded fetch, the number of fetches made before it was released
        #: (None: still held when the recording pass ended)
        self.releases: list[int | None] = []
        self._open: dict[Key, list[int]] = {}  # recorded fetches not released yet
        self.predicted: PredictedOrder | None = None  # stands in until a recording exists

    def predict(self, keys: list[Key]) -> None:
        """Use ``keys`` as the expected fetch order while there is no recording
        (an empty list: none)."""
        self.predicted = PredictedOrder(keys) if keys else None

    @property
    def ordered(self) -> bool:
        """True when prefetch and next-use eviction have an order to follow:
        a complete recording, else a prediction."""
        return self.usable or self.predicted is not None

    # ---- state ----
    def _move(self, new: ScheduleState) -> None:
        if new not in SCHEDULE_TRANSITIONS[self.state]:
            raise StoreError(f"schedule: {self.state.name} -> {new.name} is not allowed")
        self.state = new

    @property
    def usable(self) -> bool:
        """True when a complete recording exists (prefetch and next-use eviction apply)."""
        return self.state in (ScheduleState.COMPLETE, ScheduleState.REPLAYING)

    @property
    def replaying(self) -> bool:
        return self.state is ScheduleState.REPLAYING

    def begin_pass(self) -> None:
        """Start a pass: record if there is no schedule, else replay it."""
        if self.in_pass:
            raise StoreError("begin_pass() called twice without end_pass()")
        self.in_pass = True
        if self.state is ScheduleState.EMPTY:
            self._move(ScheduleState.RECORDING)
            self.entries = []
            self._uses = {}
            self.releases = []
            self._open = {}
        elif self.state is ScheduleState.COMPLETE:
            self._move(ScheduleState.REPLAYING)
        self.position = 0

    def end_pass(self) -> bool:
        """End a pass; False when it diverged (ended early) from the recording."""
        if not self.in_pass:
            raise StoreError("end_pass() called without begin_pass()")
        self.in_pass = False
        if self.state is ScheduleState.RECORDING:
            self._move(ScheduleState.COMPLETE)
            self.passes_recorded += 1
            self._open = {}
        elif self.state is ScheduleState.REPLAYING:
            if self.position != len(self.entries):
                self.invalidate(
                    f"the pass ended after {self.position} of the {len(self.entries)} "
                    "recorded fetches"
                )
                return False
            self._move(ScheduleState.COMPLETE)
        self.position = 0
        return True

    def invalidate(self, reason: str) -> None:
        """Drop the schedule with one :class:`StoreScheduleWarning`."""
        warnings.warn(
            StoreScheduleWarning(
                f"access schedule invalidated: {reason}; prefetch is off and eviction is LRU "
                "until the next pass records a new schedule"
            ),
            stacklevel=4,
        )
        self.invalidations += 1
        self._move(ScheduleState.EMPTY)
        self.entries = []
        self._uses = {}
        self.releases = []
        self._open = {}
        self.position = 0

    # ---- fetches ----
    def observe(self, key: Key) -> bool:
        """Note a fetch. Records it, or checks it against the recording.

        Returns False when the fetch diverged (the schedule is then invalid).
        """
        if self.predicted is not None:
            self.predicted.observe(key)
        if not self.in_pass:
            return True
        if self.state is ScheduleState.RECORDING:
            self._uses.setdefault(key, []).append(len(self.entries))
            self._open.setdefault(key, []).append(len(self.entries))
            self.entries.append(key)
            self.releases.append(None)
            return True
        if self.state is ScheduleState.REPLAYING:
            pos = self.position
            if pos < len(self.entries) and self.entries[pos] == key:
                self.position = pos + 1
                self.replayed += 1
                return True
            expected = (
                f"{self.entries[pos][0]!r} in {self.entries[pos][1].name}"
                if pos < len(self.entries)
                else "the end of the pass"
            )
            self.invalidate(
                f"fetch #{pos} was {key[0]!r} in {key[1].name}, the recording has {expected}"
            )
            return False
        return True

    def observe_release(self, key: Key) -> None:
        """Note the release of a fetch of ``key`` (the earliest still held) while recording."""
        if self.in_pass and self.state is ScheduleState.RECORDING and self._open.get(key):
            self.releases[self._open[key].pop(0)] = len(self.entries)

    def upcoming(self, limit: int | None = None) -> Iterator[tuple[int, Key]]:
        """(distance, key) of the fetches after the current position, one cycle at most.

        Distance 0 is the next fetch. Past the end of the pass the recording
        starts over (the next pass repeats it). Without a recording: the prediction's.
        """
        if not self.usable and self.predicted is not None:
            yield from self.predicted.upcoming(limit)
            return
        if not self.usable or not self.entries:
            return
        n = len(self.entries)
        count = n if limit is None else min(n, limit)
        for d in range(count):
            yield d, self.entries[(self.position + d) % n]

    def next_use(self, key: Key) -> int | None:
        """Fetches until ``key`` is fetched again (0: next); None if never."""
        if not self.usable:
            return None if self.predicted is None else self.predicted.next_use(key)
        uses = self._uses.get(key)
        if not uses:
            return None
        n = len(self.entries)
        i = bisect.bisect_left(uses, self.position)
        if i < len(uses):
            return uses[i] - self.position
        return n - self.position + uses[0]

    def last_fetch(self, key: Key) -> int | None:
        """Position of the latest fetch of ``key`` before the current position
        (wrapping to the previous pass); None if the recording never fetches it."""
        uses = self._uses.get(key) if self.usable else None
        if not uses:
            return None
        i = bisect.bisect_left(uses, self.position)
        return uses[i - 1] if i > 0 else uses[-1]

    @property
    def version(self) -> tuple[int, int]:
        """Changes whenever a recording completes or is dropped."""
        return (self.passes_recorded, self.invalidations)

    def __len__(self) -> int:
        return len(self.entries)
