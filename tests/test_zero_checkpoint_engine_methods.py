"""``engine.save_checkpoint(dir, tag, client_state)`` and ``engine.load_checkpoint(dir, tag)``
are the checkpoint functions: default tag ``global_step<N>``, ``latest`` followed, and
``(path, client_state)`` returned."""

from __future__ import annotations

from zero_helpers import config, make_batches, make_model

import tiermem


def test_engine_methods_save_and_load(tmp_path):
    cfg = config(stage=3, offload="cpu", offload_param="cpu")
    engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    for idx, tgt in make_batches(2):
        engine.backward(engine(idx, tgt))
        engine.step()
    first = engine.save_checkpoint(tmp_path, client_state={"k": [1, 2]})
    assert first == tmp_path / "global_step2"
    engine.save_checkpoint(tmp_path, tag="named")
    expected = engine.full_state_dict()
    engine.close()

    fresh, *_ = tiermem.initialize(model=make_model(seed=9), config=cfg)
    path, client = fresh.load_checkpoint(tmp_path)
    assert (path, client) == (tmp_path / "named", None)  # latest: the last save
    path, client = fresh.load_checkpoint(tmp_path, tag="global_step2")
    assert (path, client) == (first, {"k": [1, 2]})
    assert fresh.global_steps == 2
    got = fresh.full_state_dict()
    assert all(got[k].equal(v) for k, v in expected.items())
    fresh.close()
