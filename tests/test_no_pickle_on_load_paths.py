"""Nothing unpickles on any load path, checked at run time: with pickle's loaders,
``torch.load`` without ``weights_only=True`` and ``numpy.load`` with ``allow_pickle``
replaced by tripwires, a checkpoint loads (``engine.load_checkpoint``), ``tiermem train
--resume`` resumes and a persistent store reopens, and no tripwire fired.

(``test_zero_checkpoint_no_pickle.py`` checks the files and greps the sources; this
catches a call made through any import path, including dependencies.)
"""

from __future__ import annotations

import contextlib
import io
import pickle

import numpy
import pytest
import torch
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.cli import main
from tiermem.store import StoreConfig, TensorStore, TierKind


@pytest.fixture
def tripwires(monkeypatch):
    fired: list[str] = []

    def wire(name):
        def tripped(*args, **kwargs):
            fired.append(name)
            raise AssertionError(f"{name} called on a load path")

        return tripped

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, wire(f"pickle.{name}"))

    class TrippedUnpickler(pickle.Unpickler):  # still a class: torch subclasses it at import
        load = wire("pickle.Unpickler.load")

    monkeypatch.setattr(pickle, "Unpickler", TrippedUnpickler)
    real_torch_load, real_np_load = torch.load, numpy.load

    def torch_load(*args, weights_only=None, **kwargs):
        if weights_only is not True:
            return wire("torch.load without weights_only=True")()
        return real_torch_load(*args, weights_only=True, **kwargs)

    def np_load(*args, allow_pickle=False, **kwargs):
        if allow_pickle:
            return wire("numpy.load(allow_pickle=True)")()
        return real_np_load(*args, allow_pickle=False, **kwargs)

    monkeypatch.setattr(torch, "load", torch_load)
    monkeypatch.setattr(numpy, "load", np_load)
    return fired


def test_tripwires_fire(tripwires, tmp_path):
    torch.save({"x": 1}, tmp_path / "p.pt")
    with pytest.raises(AssertionError):
        torch.load(tmp_path / "p.pt")
    with pytest.raises(AssertionError):
        pickle.loads(pickle.dumps(1))
    assert len(tripwires) == 2


def test_engine_checkpoint_load(tmp_path, tripwires):
    nvme = {"device": "nvme", "nvme_path": str(tmp_path / "swap")}
    cfg = config(
        stage=3, extra={"zero_optimization": {"offload_param": nvme, "offload_optimizer": nvme}}
    )
    idx, tgt = make_batches(1)[0]
    engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    engine.backward(engine(idx, tgt))
    engine.step()
    engine.save_checkpoint(tmp_path / "ckpt", client_state={"epoch": 3})
    saved = engine.full_state_dict()
    engine.close()
    engine, *_ = tiermem.initialize(model=make_model(seed=1), config=cfg)
    _, client = engine.load_checkpoint(tmp_path / "ckpt")
    loaded = engine.full_state_dict()
    engine.close()
    assert client == {"epoch": 3}
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    assert tripwires == []


def test_train_resume(tmp_path, monkeypatch, tripwires):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--model", "tiny", "--checkpoint-dir", str(tmp_path / "ckpt")]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([*args, "--steps", "2"]) == 0
        assert main([*args, "--steps", "3", "--resume"]) == 0
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == "step3"
    assert tripwires == []


def test_persistent_store_reopen(tmp_path, tripwires):
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path / "s",), persistent=True)
    with TensorStore(cfg) as store:
        store.register("w", 1000, torch.float32, init=torch.arange(1000, dtype=torch.float32))
    with TensorStore(cfg) as store:
        got = store.fetch("w", TierKind.HOST).wait().clone()
        store.release("w")
    assert torch.equal(got, torch.arange(1000, dtype=torch.float32))
    assert tripwires == []
