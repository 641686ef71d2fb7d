"""PrefetchSchedule: record, replay, next use, divergence."""

from __future__ import annotations

import warnings

import pytest

from tiermem.store.errors import StoreError, StoreScheduleWarning
from tiermem.store.schedule import PrefetchSchedule
from tiermem.store.states import ScheduleState, TierKind

H, D = TierKind.HOST, TierKind.DEVICE


def recorded(keys):
    s = PrefetchSchedule()
    s.begin_pass()
    for k in keys:
        assert s.observe(k)
    s.end_pass()
    return s


def test_record_then_replay_in_order():
    keys = [("a", H), ("b", H), ("a", D), ("c", H)]
    s = recorded(keys)
    assert s.state is ScheduleState.COMPLETE and len(s) == 4
    s.begin_pass()
    assert s.state is ScheduleState.REPLAYING
    assert [k for _, k in s.upcoming()] == keys
    assert s.observe(("a", H))
    assert [k for _, k in s.upcoming(2)] == [("b", H), ("a", D)]
    for k in keys[1:]:
        assert s.observe(k)
    assert s.end_pass()
    assert s.state is ScheduleState.COMPLETE


def test_next_use_counts_fetches_ahead_and_wraps_to_next_pass():
    s = recorded([("a", H), ("b", H), ("c", H), ("a", H)])
    s.begin_pass()
    assert s.next_use(("a", H)) == 0
    assert s.next_use(("c", H)) == 2
    s.observe(("a", H))
    assert s.next_use(("a", H)) == 2  # index 3
    s.observe(("b", H))
    # b is not used again in this pass: next use is in the next pass (index 1).
    assert s.next_use(("b", H)) == 4 - 2 + 1
    assert s.next_use(("zzz", H)) is None
    assert s.next_use(("a", D)) is None


def test_divergent_fetch_warns_once_invalidates_and_next_pass_records():
    s = recorded([("a", H), ("b", H)])
    s.begin_pass()
    with pytest.warns(StoreScheduleWarning, match="fetch #1 was 'x' in HOST"):
        s.observe(("a", H))
        assert not s.observe(("x", H))
    assert s.state is ScheduleState.EMPTY and not s.usable
    assert s.next_use(("a", H)) is None and list(s.upcoming()) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert s.observe(("y", H))  # no second warning in this pass
        s.end_pass()
    s.begin_pass()
    assert s.state is ScheduleState.RECORDING
    s.observe(("q", H))
    s.end_pass()
    assert s.entries == [("q", H)]


def test_pass_ending_early_is_divergence():
    s = recorded([("a", H), ("b", H)])
    s.begin_pass()
    s.observe(("a", H))
    with pytest.warns(StoreScheduleWarning, match="ended after 1 of the 2"):
        assert not s.end_pass()
    assert s.state is ScheduleState.EMPTY


def test_unbalanced_pass_calls_are_errors():
    s = PrefetchSchedule()
    with pytest.raises(StoreError, match="without begin_pass"):
        s.end_pass()
    s.begin_pass()
    with pytest.raises(StoreError, match="twice"):
        s.begin_pass()


def test_fetches_outside_a_pass_are_not_recorded():
    s = PrefetchSchedule()
    assert s.observe(("a", H))
    assert s.entries == []
