"""The engine's first step prefetches from NVMe: it gives the store the order a
step is expected to fetch in before any schedule is recorded."""

from __future__ import annotations

from test_zero_nvme_trajectory import nvme_config
from zero_helpers import make_batches, make_model

import tiermem
from tiermem.engine.placement import Placements


def _first_step(path, monkeypatch, *, predicted: bool) -> dict:
    cfg = nvme_config(path, param="nvme", optimizer="nvme", precision="fp32")
    with monkeypatch.context() as patch:
        if not predicted:  # the engine as it was: no order before the recording
            patch.setattr(Placements, "predict", lambda self, groups, **kw: None)
        engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    try:
        store = engine.placements.stores[0]
        store.telemetry.reset()
        idx, tgt = make_batches(1)[0]
        loss = engine(idx, tgt)
        engine.backward(loss)
        engine.step()
        return store.telemetry.snapshot()
    finally:
        engine.close()


def test_first_step_prefetches_with_the_predicted_order(tmp_path, monkeypatch):
    base = _first_step(tmp_path / "plain", monkeypatch, predicted=False)
    got = _first_step(tmp_path / "guess", monkeypatch, predicted=True)
    assert base["prefetch_hits"] == 0
    assert got["prefetch_hits"] > 0, got
    assert got["demand_loads"] < base["demand_loads"], (got["demand_loads"], base["demand_loads"])
    assert got["stalls"] <= base["stalls"], (got["stalls"], base["stalls"])


def test_the_prediction_follows_the_first_step(tmp_path):
    """The tensors the first step fetches are the predicted ones, nearly all at
    the place the prediction expected them."""
    cfg = nvme_config(tmp_path, param="nvme", optimizer="nvme", precision="fp32")
    engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    try:
        predicted = engine.placements.stores[0].schedule.predicted
        names = {n for n, _ in predicted.entries}
        fetched, expected = [], 0
        real = predicted.observe

        def spy(key):
            nonlocal expected
            fetched.append(key[0])
            expected += predicted.next_use(key) == 0
            real(key)

        predicted.observe = spy
        idx, tgt = make_batches(1)[0]
        engine.backward(engine(idx, tgt))
        engine.step()
        assert fetched and set(fetched) <= names
        assert expected >= 0.9 * len(fetched), (expected, len(fetched))
    finally:
        engine.close()
