"""``tiermem.hf.from_pretrained``: build under init_context and stream a sharded safetensors
folder into the NVMe tiers in one call. A spy on the file reads shows every element of every
tensor is read exactly once, in pieces no larger than the largest tensor, and nothing loads a
shard file or a state dict whole."""

from __future__ import annotations

import json

import pytest
import torch
from hf_models import batch, build, transformers

from tiermem.engine import checkpoint_format
from tiermem.hf import from_pretrained


def _config(tmp_path) -> dict:
    nvme = {"device": "nvme", "nvme_path": str(tmp_path / "swap")}
    (tmp_path / "swap").mkdir()
    return {
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,
            "offload_param": dict(nvme),
            "offload_optimizer": dict(nvme),
        },
    }


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_sharded_folder_streams_into_the_tiers(tmp_path, monkeypatch, name):
    source = build(name, seed=5)
    folder = tmp_path / "hf"
    source.save_pretrained(folder, max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) >= 3  # really sharded

    reads: list[tuple[str, int, int]] = []
    real_read = checkpoint_format.SafetensorsReader.read_into

    def spy(self, key, out, *, start=0):
        reads.append((key, start, out.numel()))
        return real_read(self, key, out, start=start)

    def whole(*args, **kwargs):
        raise AssertionError("a whole file or state dict was loaded")

    monkeypatch.setattr(checkpoint_format.SafetensorsReader, "read_into", spy)
    monkeypatch.setattr("safetensors.torch.load_file", whole)
    monkeypatch.setattr(torch, "load", whole)

    engine, *_ = from_pretrained(type(source), folder, config=_config(tmp_path))
    try:
        got = engine.full_state_dict()
        expected = dict(source.named_parameters())
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value.detach()), key
        # it trains from there
        loss = engine(**batch(name)).loss
        engine.backward(loss)
        engine.step()
        assert torch.isfinite(loss)
    finally:
        engine.close()

    stored = {k: v for k, v in source.state_dict().items() if k in index["weight_map"]}
    by_key: dict[str, list[tuple[int, int]]] = {}
    for key, start, n in reads:
        by_key.setdefault(key, []).append((start, start + n))
    assert set(by_key) == set(stored)
    for key, ranges in by_key.items():
        ranges.sort()
        covered = 0
        for lo, hi in ranges:  # the pieces tile the tensor: each element read once
            assert lo == covered, (key, ranges)
            covered = hi
        assert covered == stored[key].numel(), key
    largest = max(t.numel() for t in stored.values())
    assert max(n for _, _, n in reads) <= largest


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(transformers.LlamaForCausalLM, tmp_path, config=_config(tmp_path))


def test_an_auto_class_works_too(tmp_path):
    source = build("llama", seed=5)
    source.save_pretrained(tmp_path / "hf")
    engine, *_ = from_pretrained(
        transformers.AutoModelForCausalLM, tmp_path / "hf", config=_config(tmp_path)
    )
    try:
        got = engine.full_state_dict()
        assert torch.equal(got["lm_head.weight"], source.lm_head.weight.detach())
    finally:
        engine.close()
