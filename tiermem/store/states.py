"""Tier kinds, per-copy residency states and their allowed transitions.

Every (tensor, tier) pair of the store has one :class:`Residency`; every change
goes through :func:`check_transition`, so an impossible sequence (evicting a
copy mid-read, marking a copy dirty before it arrived) fails loudly at the
line that attempted it instead of corrupting data later.
"""

from __future__ import annotations

import enum


class TierKind(enum.Enum):
    """The three memory tiers, fastest first."""

    DEVICE = "device"
    HOST = "host"
    NVME = "nvme"


class Residency(enum.Enum):
    """The state of one tensor's copy in one tier.

    ``CLEAN`` and ``DIRTY`` copies hold valid bytes; ``DIRTY`` means newer than
    the home tier's copy (it must be written home before it may be dropped).
    """

    ABSENT = "absent"  # no bytes in this tier
    LOADING = "loading"  # bytes arriving from another tier; not valid yet
    CLEAN = "clean"  # valid, equal to the home copy
    DIRTY = "dirty"  # valid, newer than the home copy
    FLUSHING = "flushing"  # dirty copy being written home; stays afterwards
    EVICTING = "evicting"  # dirty copy being written home; freed afterwards

    @property
    def valid(self) -> bool:
        """True when the copy's bytes may be read."""
        return self in _VALID


_VALID = frozenset({Residency.CLEAN, Residency.DIRTY, Residency.FLUSHING, Residency.EVICTING})

R = Residency
# [Note: the table is the single statement of the life cycle of a copy.
#  LOADING -> DIRTY happens when a copy is filled from a dirty copy in another
#  tier (it is as new as its source); FLUSHING/EVICTING -> DIRTY when the write
#  home failed (the data is still only here); DIRTY -> ABSENT only for drop()
#  and for invalidation by a newer copy elsewhere, never for eviction, which
#  goes through EVICTING.]
ALLOWED_TRANSITIONS: dict[Residency, frozenset[Residency]] = {
    R.ABSENT: frozenset({R.LOADING, R.CLEAN, R.DIRTY}),
    R.LOADING: frozenset({R.CLEAN, R.DIRTY, R.ABSENT}),
    R.CLEAN: frozenset({R.DIRTY, R.ABSENT}),
    R.DIRTY: frozenset({R.FLUSHING, R.EVICTING, R.CLEAN, R.ABSENT}),
    R.FLUSHING: frozenset({R.CLEAN, R.DIRTY}),
    R.EVICTING: frozenset({R.ABSENT, R.DIRTY}),
}


class IllegalTransition(RuntimeError):
    """A residency change the transition table does not allow (a store bug)."""


def check_transition(name: str, tier: TierKind, old: Residency, new: Residency) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is allowed."""
    if new not in ALLOWED_TRANSITIONS[old]:
        raise IllegalTransition(
            f"tensor {name!r} in tier {tier.name}: {old.name} -> {new.name} is not allowed "
            f"(from {old.name} only {sorted(s.name for s in ALLOWED_TRANSITIONS[old])})"
        )


class ScheduleState(enum.Enum):
    """Life cycle of the recorded access schedule."""

    EMPTY = "empty"  # nothing recorded yet (or invalidated): fetches are LRU
    RECORDING = "recording"  # first pass: fetches are appended
    COMPLETE = "complete"  # recorded; between passes
    REPLAYING = "replaying"  # a later pass following the recording


SCHEDULE_TRANSITIONS: dict[ScheduleState, frozenset[ScheduleState]] = {
    ScheduleState.EMPTY: frozenset({ScheduleState.RECORDING}),
    ScheduleState.RECORDING: frozenset({ScheduleState.COMPLETE, ScheduleState.EMPTY}),
    ScheduleState.COMPLETE: frozenset({ScheduleState.REPLAYING, ScheduleState.EMPTY}),
    ScheduleState.REPLAYING: frozenset({ScheduleState.COMPLETE, ScheduleState.EMPTY}),
}
