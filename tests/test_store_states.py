"""The residency transition table is enforced."""

from __future__ import annotations

import pytest

from tiermem.store.states import (
    ALLOWED_TRANSITIONS,
    IllegalTransition,
    Residency,
    TierKind,
    check_transition,
)


def test_life_cycle_of_a_copy_is_allowed():
    path = [
        Residency.ABSENT,
        Residency.LOADING,
        Residency.CLEAN,
        Residency.DIRTY,
        Residency.FLUSHING,
        Residency.CLEAN,
        Residency.DIRTY,
        Residency.EVICTING,
        Residency.ABSENT,
    ]
    for old, new in zip(path[:-1], path[1:], strict=True):
        check_transition("w", TierKind.HOST, old, new)


@pytest.mark.parametrize(
    "old,new",
    [
        (Residency.LOADING, Residency.EVICTING),  # evict mid-read
        (Residency.ABSENT, Residency.FLUSHING),  # flush of nothing
        (Residency.EVICTING, Residency.CLEAN),  # an evicted copy must go
        (Residency.CLEAN, Residency.EVICTING),  # clean copies need no write
        (Residency.FLUSHING, Residency.ABSENT),  # dropped mid-write
    ],
)
def test_illegal_transitions_raise_naming_tensor_and_tier(old, new):
    with pytest.raises(IllegalTransition, match=r"'w' in tier NVME: .* is not allowed"):
        check_transition("w", TierKind.NVME, old, new)


def test_every_state_has_a_row_and_valid_means_readable():
    assert set(ALLOWED_TRANSITIONS) == set(Residency)
    readable = {r for r in Residency if r.valid}
    assert readable == {
        Residency.CLEAN,
        Residency.DIRTY,
        Residency.FLUSHING,
        Residency.EVICTING,
    }
