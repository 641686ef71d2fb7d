"""A stage 3 checkpoint saved by 2 ranks exports to one safetensors file holding the model's
full state dict bit for bit (tied weights once, under their first name), also as bf16."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from zero_helpers import config, make_batches, make_model, run_ranks

import tiermem
from tiermem.engine.weights_export import export_weights


def _model():
    model = make_model()
    model.register_buffer("seen", torch.tensor([1.5, -2.0, 3.25]))  # persistent
    return model


def _train_and_save(rank: int, world: int, ckpt: str) -> dict:
    cfg = config(stage=3, offload="cpu", offload_param="cpu", world=world)
    engine, *_ = tiermem.initialize(model=_model(), config=cfg)
    per = 8 // world
    mine = slice(rank * per, (rank + 1) * per)
    for idx, tgt in make_batches(2):
        engine.backward(engine(idx[mine], tgt[mine]))
        engine.step()
    engine.save_checkpoint(ckpt)
    full = engine.full_state_dict()
    full["seen"] = engine.module.seen.detach().clone()
    engine.close()
    return full


def test_export_equals_full_state_dict(tmp_path):
    ckpt = tmp_path / "ckpt"
    full = run_ranks(_train_and_save, str(ckpt))[0]
    assert set(full) >= {"wte.weight", "seen"} and "lm_head.weight" not in full

    result = export_weights(ckpt, tmp_path / "model.safetensors")
    got = load_file(tmp_path / "model.safetensors")
    assert result.tensors == len(full) and result.files == ("model.safetensors",)
    assert set(got) == set(full)
    for name, value in full.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert torch.equal(got[name], value), name
    # the file is what the model's own state_dict has, minus the tied alias
    reference = _model().state_dict()
    assert set(reference) - set(got) == {"lm_head.weight"}
    assert not torch.equal(got["blocks.0.fc.weight"], reference["blocks.0.fc.weight"])

    export_weights(ckpt, tmp_path / "bf16.safetensors", dtype="bf16")
    low = load_file(tmp_path / "bf16.safetensors")
    for name, value in full.items():
        assert torch.equal(low[name], value.to(torch.bfloat16)), name
