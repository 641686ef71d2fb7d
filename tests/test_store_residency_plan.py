"""plan_keeps: which fetches' copies stay resident until their next fetch when the
farthest-needed copy is evicted over a schedule that repeats."""

from __future__ import annotations

import random

from tiermem.store.residency import plan_keeps


def _reference(entries, sizes, capacity, releases=None):
    """The same rule, spelled out: replay three cycles with a list, keep the middle."""
    n = len(entries)
    seq = list(entries) * 3
    if releases is None:
        releases = [p + 1 for p in range(n)]

    def next_fetch(t):
        for u in range(t + 1, len(seq)):
            if seq[u] == seq[t]:
                return u
        return len(seq)

    def released_at(f):  # the position before whose fetch fetch f is released
        r = releases[f % n]
        return f + n if r is None else f - f % n + max(r, f % n + 1)

    def held(key, t):
        return any(seq[f] == key and released_at(f) > t for f in range(t))

    resident = {}  # key -> latest fetch
    keep = [False] * n
    for t, key in enumerate(seq):
        if key in resident:
            if n <= resident[key] < 2 * n:
                keep[resident[key] - n] = True
        elif sizes.get(key, 0) > capacity:
            continue
        else:
            while sum(sizes.get(k, 0) for k in resident) + sizes.get(key, 0) > capacity:
                free = [k for k in resident if not held(k, t)]
                if not free:
                    break
                victim = max(free, key=lambda k: (next_fetch(resident[k]), -resident[k]))
                del resident[victim]
        resident[key] = t
    return keep


def test_everything_fits_everything_is_kept():
    assert plan_keeps(list("ABCD"), dict.fromkeys("ABCD", 1), 4) == [True] * 4


def test_a_hot_tensor_stays_and_the_stream_passes_through():
    entries = list("AXAYAZ")
    assert plan_keeps(entries, dict.fromkeys("AXYZ", 1), 2) == [True, False] * 3


def test_four_cycling_through_room_for_two_keep_one_per_cycle():
    keep = plan_keeps(list("ABCD"), dict.fromkeys("ABCD", 1), 2)
    assert keep.count(True) == 1


def test_a_tensor_larger_than_the_room_is_never_kept_and_takes_none():
    sizes = {"A": 1, "B": 1, "C": 1, "D": 5}
    assert plan_keeps(list("ABCD"), sizes, 3) == [True, True, True, False]


def test_keys_without_a_size_take_no_room():
    assert plan_keeps(["A", "dev", "B"], {"A": 1, "B": 1}, 2) == [True, True, True]


def test_empty_schedule():
    assert plan_keeps([], {}, 10) == []


def test_a_held_copy_is_not_evicted_and_another_goes_instead():
    entries, sizes = list("ABCB"), dict.fromkeys("ABC", 1)
    # released before the next fetch: A (needed farthest) makes room for C
    assert plan_keeps(entries, sizes, 2) == [False, True, False, True]
    assert plan_keeps(entries, sizes, 2, [1, 2, 3, 4]) == [False, True, False, True]
    # A still held while C is fetched (released after it): B goes instead
    assert plan_keeps(entries, sizes, 2, [3, 2, 3, 4]) == [True, False, False, True]
    assert plan_keeps(entries, sizes, 2, [None, 2, 3, 4]) == [True, False, False, True]


def test_matches_the_spelled_out_rule_on_random_schedules():
    rng = random.Random(7)
    for _ in range(200):
        keys = [f"k{i}" for i in range(rng.randint(1, 8))]
        entries = [rng.choice(keys) for _ in range(rng.randint(1, 16))]
        sizes = {k: rng.randint(1, 4) for k in keys}
        capacity = rng.randint(1, 12)
        assert plan_keeps(entries, sizes, capacity) == _reference(entries, sizes, capacity), (
            entries,
            sizes,
            capacity,
        )
        n = len(entries)
        releases = [None if rng.random() < 0.1 else rng.randint(p + 1, n) for p in range(n)]
        got = plan_keeps(entries, sizes, capacity, releases)
        assert got == _reference(entries, sizes, capacity, releases), (
            entries,
            sizes,
            capacity,
            releases,
        )
