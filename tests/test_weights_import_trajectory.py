"""engine.load_weights from each format (safetensors file, PyTorch state-dict file, Hugging
Face folder: model.safetensors, pytorch_model.bin, each also sharded) trains exactly like the
model given the same weights with load_state_dict before initialize."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from safetensors.torch import save_file
from zero_helpers import config, engine_losses, make_batches, make_model

import tiermem

STEPS = 3


def _weights() -> dict[str, torch.Tensor]:
    return make_model(seed=5).state_dict()  # both tied names, as torch saves them


def _write(fmt: str, root) -> str:
    sd = _weights()
    once = {k: v.clone() for k, v in sd.items() if k != "lm_head.weight"}  # HF style
    if fmt == "safetensors":
        save_file(once, root / "w.safetensors")
        return str(root / "w.safetensors")
    if fmt == "torch":
        torch.save(sd, root / "w.pt")
        return str(root / "w.pt")
    folder = root / "hf"
    folder.mkdir()
    if fmt == "hf-safetensors":
        save_file(once, folder / "model.safetensors", metadata={"format": "pt"})
    elif fmt == "hf-bin":
        torch.save(sd, folder / "pytorch_model.bin")
    else:  # hf-sharded, hf-bin-sharded
        names = sorted(once)
        stem, ext = ("model", "safetensors") if fmt == "hf-sharded" else ("pytorch_model", "bin")
        weight_map = {}
        for i, keys in enumerate((names[: len(names) // 2], names[len(names) // 2 :]), 1):
            file = f"{stem}-0000{i}-of-00002.{ext}"
            part = {k: once[k] for k in keys}
            if ext == "bin":
                torch.save(part, folder / file)
            else:
                save_file(part, folder / file)
            weight_map.update(dict.fromkeys(keys, file))
        (folder / f"{stem}.{ext}.index.json").write_text(
            json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
        )
    return str(folder)


def _train(engine) -> list[float]:
    losses = []
    for idx, tgt in make_batches(STEPS):
        loss = engine(idx, tgt)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    engine.close()
    return losses


def _reference(cfg: dict) -> list[float]:
    return list(_cached_reference(json.dumps(cfg, sort_keys=True)))


@functools.cache
def _cached_reference(cfg_json: str) -> tuple[float, ...]:
    model = make_model(seed=1)
    model.load_state_dict(_weights())
    return tuple(engine_losses(json.loads(cfg_json), steps=STEPS, model=model))


def _cfg(tmp_path, offload: str, precision: str = "fp32") -> dict:
    cfg = config(stage=3, offload=offload, offload_param=offload, precision=precision)
    if offload == "nvme":
        for key in ("offload_param", "offload_optimizer"):
            cfg["zero_optimization"][key]["nvme_path"] = str(tmp_path / "swap")
    return cfg


FORMATS = ["safetensors", "torch", "hf-safetensors", "hf-sharded", "hf-bin", "hf-bin-sharded"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_trains_like_load_state_dict(tmp_path, fmt):
    cfg = _cfg(tmp_path, "cpu")
    path = _write(fmt, tmp_path)
    engine, *_ = tiermem.initialize(model=make_model(seed=1), config=cfg)
    report = engine.load_weights(path)
    assert report.missing_keys == () and report.unexpected_keys == ()
    weights = _weights()
    for name, value in engine.full_state_dict().items():  # the file's, not seed 1's
        assert torch.equal(value, weights[name]), name
    assert _train(engine) == _reference(cfg)


@pytest.mark.parametrize(
    ("offload", "precision"), [("none", "fp32"), ("nvme", "fp32"), ("cpu", "bf16")]
)
def test_placements_and_precision(tmp_path, offload, precision):
    cfg = _cfg(tmp_path, offload, precision)
    path = _write("safetensors", tmp_path)
    engine, *_ = tiermem.initialize(model=make_model(seed=1), config=cfg)
    engine.load_weights(path)
    assert _train(engine) == _reference(cfg)


def test_model_built_in_init_context(tmp_path):
    cfg = _cfg(tmp_path, "cpu")
    path = _write("safetensors", tmp_path)
    torch.manual_seed(1)
    with tiermem.init_context(config=cfg):
        from zero_helpers import TinyGPT

        model = TinyGPT()
    assert all(p.numel() == 0 for p in model.parameters())  # never whole
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    engine.load_weights(path)
    assert _train(engine) == _reference(cfg)


def test_frozen_and_persistent_groups(tmp_path):
    """A frozen module (no masters) and stage 3 groups kept gathered (persistence threshold)."""
    cfg = _cfg(tmp_path, "cpu")
    cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 10_000
    path = _write("safetensors", tmp_path)

    def build(seed: int):
        model = make_model(seed=seed)
        model.wpe.weight.requires_grad_(False)
        return model

    engine, *_ = tiermem.initialize(model=build(1), config=cfg)
    assert any(g.persistent for g in engine.groups) and not all(g.trainable for g in engine.groups)
    engine.load_weights(path)
    weights = _weights()
    assert torch.equal(engine.module.ln_f.weight, weights["ln_f.weight"])  # gathered copy
    got = _train(engine)
    reference = build(1)
    reference.load_state_dict(weights)
    assert got == engine_losses(cfg, steps=STEPS, model=reference)
