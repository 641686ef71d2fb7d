"""Loading under another precision or trainability: a bf16 checkpoint gives an fp32 engine its
fp32 master weights (not the rounded bf16 copies), an fp32 checkpoint gives a bf16 engine the
masters rounded to bf16, and a parameter saved frozen starts its masters from its weights."""

from __future__ import annotations

import json
import warnings

import torch
from safetensors import safe_open
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint


def stored(ckpt, kind: str) -> dict[str, torch.Tensor]:
    manifest = json.loads((ckpt / "manifest.json").read_text())["manifest"]
    out = {}
    for name, info in manifest["params"].items():
        parts = []
        for file, key, _, _ in info["pieces"].get(kind, ()):
            with safe_open(ckpt / file, framework="pt") as f:
                parts.append(f.get_tensor(key))
        if parts:
            out[name] = torch.cat(parts).view(info["shape"])
    return out


def trained(precision: str, tmp_path, *, freeze: str | None = None):
    model = make_model()
    if freeze:
        model.get_submodule(freeze).weight.requires_grad_(False)
    cfg = config(stage=3, offload="cpu", offload_param="cpu", precision=precision)
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    for idx, tgt in make_batches(2):
        engine.backward(engine(idx, tgt))
        engine.step()
    path = save_checkpoint(engine, tmp_path / precision)
    engine.close()
    return path


def test_bf16_to_fp32_takes_the_masters_and_back(tmp_path):
    warnings.simplefilter("ignore")
    bf16 = trained("bf16", tmp_path)
    masters = stored(bf16, "master")
    assert any(not torch.equal(m.bfloat16().float(), m) for m in masters.values())
    fp32, *_ = tiermem.initialize(model=make_model(seed=4), config=config(stage=2))
    load_checkpoint(fp32, bf16)
    weights = fp32.full_state_dict()
    assert all(torch.equal(weights[n], m) for n, m in masters.items())
    back = save_checkpoint(fp32, tmp_path / "back")
    fp32.close()

    cfg = config(stage=3, offload="cpu", offload_param="cpu", precision="bf16")
    again, *_ = tiermem.initialize(model=make_model(seed=5), config=cfg)
    load_checkpoint(again, back)
    weights = again.full_state_dict()
    assert all(torch.equal(weights[n], m.bfloat16()) for n, m in masters.items())
    again.close()


def test_a_frozen_parameter_becomes_trainable_from_its_weights(tmp_path):
    path = trained("fp32", tmp_path, freeze="wpe")
    assert "wpe.weight" not in stored(path, "master")
    saved = stored(path, "param")["wpe.weight"]
    engine, *_ = tiermem.initialize(model=make_model(seed=6), config=config(stage=1))
    load_checkpoint(engine, path)
    group = next(g for g in engine.groups if g.layout.module_name == "wpe")
    state = engine.master_state(group.index)
    assert torch.equal(state["master"][: saved.numel()], saved.reshape(-1))
    assert not state["exp_avg"].any() and not state["exp_avg_sq"].any()
    engine.close()
