"""A predicted fetch order drives prefetch before any pass has recorded one."""

from __future__ import annotations

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind
from tiermem.store.schedule import PredictedOrder

H = TierKind.HOST
N = 64 << 10  # fp32 elements: 256 KiB per tensor
NAMES = [f"t{i}" for i in range(8)]


def make(tmp_path):
    cfg = StoreConfig(
        host_bytes=3 * 4 * N,
        nvme_paths=(tmp_path / "a",),
        prefetch_bytes=2 * 4 * N,
    )
    store = TensorStore(cfg)
    for i, name in enumerate(NAMES):
        store.register(name, N, torch.float32, init=torch.full((N,), float(i)))
    return store


def first_pass(store, order):
    """One recording pass over ``order``; the caller's work between fetches is
    modelled by letting every read in flight finish (so a prefetch issued one
    fetch earlier has landed: no timing in the assertions)."""
    store.telemetry.reset()
    store.begin_pass()
    for name in order:
        t = store.fetch(name, H).wait()
        assert t[0].item() == float(name[1:])
        store.release(name, dirty=True)
        for load in list(store._loads):
            store._wait_load(load)
    store.end_pass()
    return store.telemetry.snapshot()


def test_prediction_prefetches_the_first_pass(tmp_path):
    with make(tmp_path / "plain") as plain:
        base = first_pass(plain, NAMES)
    with make(tmp_path / "guess") as guessed:
        guessed.predict([(n, H) for n in NAMES])
        got = first_pass(guessed, NAMES)
        # the recording then takes over from the prediction
        assert guessed.schedule.usable and guessed.schedule.entries == [(n, H) for n in NAMES]
    assert base["prefetch_hits"] == 0
    assert got["prefetch_hits"] >= len(NAMES) - 3, got
    assert got["demand_loads"] < base["demand_loads"], (got, base)
    assert got["stalls"] < base["stalls"], (got, base)


def test_a_wrong_guess_still_reads_right(tmp_path):
    """Fetches in another order than predicted: the right bytes, and the
    prediction's position follows the fetches."""
    order = NAMES[4:] + NAMES[:4]
    with make(tmp_path) as store:
        store.predict([(n, H) for n in reversed(NAMES)])
        first_pass(store, order)  # asserts the values
        assert store.schedule.usable


def test_position_follows_the_fetches():
    keys = [("a", H), ("b", H), ("c", H), ("a", H), ("d", H)]
    p = PredictedOrder(keys, reach=3)
    p.observe(("a", H))
    assert p.next_use(("b", H)) == 0
    p.observe(("x", H))  # unknown: stays
    assert [k for _, k in p.upcoming(2)] == [("b", H), ("c", H)]
    p.observe(("c", H))  # b skipped
    assert p.next_use(("a", H)) == 0 and p.next_use(("b", H)) == 3
    p.observe(("b", H))  # b came late: stays
    assert p.next_use(("a", H)) == 0
    p.observe(("a", H))
    p.observe(("d", H))  # the end wraps to the start
    assert p.position == 0 and p.next_use(("a", H)) == 0


def test_a_repeated_key_far_ahead_does_not_jump():
    """A tied weight gathered again at the end of the forward is not taken for
    its use at the end of the backward."""
    fwd = [(f"p{i}", H) for i in range(10)]
    p = PredictedOrder(fwd + fwd[::-1], reach=4)
    for key in fwd:
        p.observe(key)
    assert p.position == 10
    p.observe(("p0", H))  # expected 9 entries ahead: out of reach
    assert p.position == 10 and p.next_use(("p9", H)) == 0
