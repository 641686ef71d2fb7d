"""Export as a Hugging Face folder: config.json from the model's recorded config (with
architectures), model.safetensors, or shards of at most max_shard_size with an index whose
weight_map and total_size are right; the folder loads back into an engine exactly. A model
without a config is refused for --hf."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from zero_helpers import TinyGPT, config, make_model

import tiermem
from tiermem.engine.checkpoint_format import read_manifest
from tiermem.engine.weights_export import ExportError, export_weights


class FakeConfig:
    """What the engine looks for on a transformers model: ``.config.to_dict()``."""

    def to_dict(self):
        return {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "torch_dtype": torch.float32}


class HFLikeGPT(TinyGPT):
    def __init__(self):
        super().__init__()
        self.config = FakeConfig()


def _cfg():
    return config(stage=3, offload="cpu", offload_param="cpu")


def _checkpoint(tmp_path, model):
    engine, *_ = tiermem.initialize(model=model, config=_cfg())
    engine.save_checkpoint(tmp_path / "ckpt")
    full = engine.full_state_dict()
    engine.close()
    return tmp_path / "ckpt", full


def test_folder_layout_sharding_and_round_trip(tmp_path):
    torch.manual_seed(3)
    ckpt, full = _checkpoint(tmp_path, HFLikeGPT())
    recorded = read_manifest(ckpt / "global_step0")["model_config"]
    assert recorded["architectures"] == ["HFLikeGPT"]
    assert recorded["torch_dtype"] == "torch.float32"  # not JSON: stored as its str

    one = export_weights(ckpt, tmp_path / "one", hf=True)
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert one.files == ("model.safetensors", "config.json")
    cfg = json.loads((tmp_path / "one" / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["HFLikeGPT"]

    limit = 20_000
    export_weights(ckpt, tmp_path / "sharded", hf=True, max_shard_size=limit, dtype="bf16")
    folder = tmp_path / "sharded"
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    n = len(shards)
    assert n > 2 and shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert set(index["weight_map"]) == set(full) and set(index["weight_map"].values()) == set(
        shards
    )
    merged = {}
    for name in shards:
        part = load_file(folder / name)
        size = sum(t.numel() * t.element_size() for t in part.values())
        assert size <= limit or len(part) == 1, name  # a larger tensor alone
        assert all(index["weight_map"][k] == name for k in part)
        merged.update(part)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in merged.values()
    )
    assert all(torch.equal(merged[k], v.to(torch.bfloat16)) for k, v in full.items())
    assert json.loads((folder / "config.json").read_text())["torch_dtype"] == "bfloat16"

    engine, *_ = tiermem.initialize(model=make_model(seed=8), config=_cfg())
    engine.load_weights(tmp_path / "one")
    got = engine.full_state_dict()
    engine.close()
    assert all(torch.equal(got[k], v) for k, v in full.items())


def test_hf_refused_without_a_model_config(tmp_path):
    ckpt, _ = _checkpoint(tmp_path, make_model())
    with pytest.raises(ExportError, match=r"manifest\.json: no model config recorded"):
        export_weights(ckpt, tmp_path / "out", hf=True)
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary left either
