"""A damaged checkpoint is refused with an error naming the file, before the engine changes:
a flipped byte, a truncated or missing tensor file, an edited or missing manifest, a model
that does not fit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.checkpoint import CheckpointMismatchError, load_checkpoint, save_checkpoint
from tiermem.engine.checkpoint_format import CheckpointCorruptError

CFG = config(stage=3, offload="cpu", offload_param="cpu")


def _flip(path, offset_from_end=100):
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(raw))


def _edit_manifest(path):
    doc = json.loads(path.read_text())
    doc["manifest"]["counters"]["global_steps"] = 99
    path.write_text(json.dumps(doc))


DAMAGE = {
    "flipped bit": ("rank00000.safetensors", _flip, r"rank00000\.safetensors: CRC32C"),
    "truncated": (
        "rank00000.safetensors",
        lambda p: p.write_bytes(p.read_bytes()[:-8]),
        r"rank00000\.safetensors: \d+ bytes, the manifest says",
    ),
    "missing file": ("rank00000.safetensors", lambda p: p.unlink(), "safetensors: missing"),
    "edited manifest": ("manifest.json", _edit_manifest, "manifest.json: checksum mismatch"),
    "missing manifest": ("manifest.json", lambda p: p.unlink(), "manifest.json: missing"),
    "garbled manifest": (
        "manifest.json",
        lambda p: p.write_bytes(p.read_bytes()[:50]),
        "manifest.json: not a tiermem manifest",
    ),
}


def _snapshot(engine):
    return engine.global_steps, {k: v.clone() for k, v in engine.full_state_dict().items()}


def _same(a, b) -> bool:
    return a[0] == b[0] and all(torch.equal(v, b[1][k]) for k, v in a[1].items())


def test_damage_is_detected_and_named(tmp_path):
    engine, *_ = tiermem.initialize(model=make_model(), config=CFG)
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()
    pristine = save_checkpoint(engine, tmp_path / "pristine", tag="A")
    fresh, *_ = tiermem.initialize(model=make_model(seed=3), config=CFG)
    before = _snapshot(fresh)
    for i, (what, (name, damage, message)) in enumerate(DAMAGE.items()):
        root = tmp_path / f"case{i}"
        shutil.copytree(pristine.parent, root)
        damage(root / "A" / name)
        with pytest.raises(CheckpointCorruptError, match=message):
            load_checkpoint(fresh, root)
        assert _same(_snapshot(fresh), before), f"{what}: the engine changed"
    path, _ = load_checkpoint(fresh, pristine.parent)
    assert _same(_snapshot(fresh), _snapshot(engine))
    engine.close()
    fresh.close()


def test_a_model_that_does_not_fit_is_named(tmp_path):
    engine, *_ = tiermem.initialize(model=make_model(), config=CFG)
    save_checkpoint(engine, tmp_path)
    engine.close()
    model = make_model()
    model.extra = nn.Linear(4, 4)
    other, *_ = tiermem.initialize(model=model, config=CFG)
    missing = r"missing from the checkpoint: \['extra.bias', 'extra.weight'\]"
    with pytest.raises(CheckpointMismatchError, match=missing):
        load_checkpoint(other, tmp_path)
    other.close()
    model = make_model()
    model.ln_f = nn.LayerNorm(16)
    bad, *_ = tiermem.initialize(model=model, config=CFG)
    shape = r"'ln_f.weight' has shape \[32\] there, \[16\] here"
    with pytest.raises(CheckpointMismatchError, match=shape):
        load_checkpoint(bad, tmp_path)
    bad.close()
