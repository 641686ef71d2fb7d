"""Streaming a model whose weights are read tensor by tensor from a safetensors
file, into a model built on the meta device (no weights in RAM)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from tiermem.inference import InferenceConfig, InferenceError, StreamingModel
from tiermem.store import StoreConfig, TierKind
from tiermem.train.models import GPT, GPTConfig

CFG = GPTConfig(hidden_size=64, num_layers=3, num_heads=2, seq_len=16)


def _save(model: GPT, path, *, drop: str | None = None, reshape: str | None = None) -> None:
    # the head is tied to wte.weight: the file holds it once, as Hugging Face files do
    tensors = {k: v.clone() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    if drop:
        del tensors[drop]
    if reshape:
        tensors[reshape] = tensors[reshape].reshape(-1).clone()
    save_file(tensors, str(path))


def _meta_gpt() -> GPT:
    # [Note: built small and moved to meta (what `with torch.device("meta")`
    #  gives, without its one-off seconds of torch imports in a test); the move
    #  makes new Parameters, so the head is tied again.]
    model = GPT(CFG).to("meta")
    model.lm_head.weight = model.wte.weight
    model.positions = torch.arange(CFG.seq_len)  # a non-persistent buffer: not in the file
    return model


def test_meta_model_from_safetensors_equals_original(tmp_path):
    torch.manual_seed(11)
    original = GPT(CFG).eval()
    path = tmp_path / "model.safetensors"
    _save(original, path)
    ids = torch.randint(0, CFG.vocab_size, (2, 12), generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        want = original(ids)
    swap = tmp_path / "swap"
    swap.mkdir()
    cfg = InferenceConfig(
        store=StoreConfig(host_bytes=450_000, nvme_paths=(swap,), prefetch_bytes=200_000),
        compute_tier=TierKind.HOST,
        weights=path,
    )
    model = _meta_gpt()
    with StreamingModel(model, cfg) as streamed:
        assert streamed.weight_bytes > 450_000
        got = streamed(ids)
        tokens = streamed.generate(ids[:, :4], 3)
    assert torch.equal(got, want)
    ref_tokens = ids[:, :4]
    with torch.no_grad():
        for _ in range(3):
            nxt = original(ref_tokens)[:, -1].argmax(-1, keepdim=True)
            ref_tokens = torch.cat([ref_tokens, nxt], 1)
    assert torch.equal(tokens, ref_tokens)


def test_missing_and_misshapen_tensors(tmp_path):
    torch.manual_seed(13)
    original = GPT(CFG)
    store = StoreConfig(nvme_paths=(tmp_path,))
    missing = tmp_path / "missing.safetensors"
    _save(original, missing, drop="blocks.1.fc.weight")
    with pytest.raises(
        InferenceError, match=r"missing.safetensors' lacks 1 .*blocks\.1\.fc\.weight"
    ):
        StreamingModel(_meta_gpt(), InferenceConfig(store=store, weights=missing))
    bad = tmp_path / "bad.safetensors"
    _save(original, bad, reshape="blocks.0.qkv.weight")
    with pytest.raises(InferenceError, match=r"'blocks\.0\.qkv\.weight' has shape \(12288,\)"):
        StreamingModel(_meta_gpt(), InferenceConfig(store=store, weights=bad))
    with pytest.raises(InferenceError, match="no file"):
        StreamingModel(_meta_gpt(), InferenceConfig(store=store, weights=tmp_path / "nope"))
    # the failed loads left no swap files behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.safetensors", "missing.safetensors"]


def test_meta_without_weights_file(tmp_path):
    cfg = InferenceConfig(store=StoreConfig(nvme_paths=(tmp_path,)))
    with pytest.raises(InferenceError, match=r"parameter 'wte\.weight' is on the meta device"):
        StreamingModel(_meta_gpt(), cfg)
    model = GPT(CFG).to("meta")
    model.lm_head.weight = model.wte.weight
    path = tmp_path / "m.safetensors"
    _save(GPT(CFG), path)
    with pytest.raises(InferenceError, match=r"buffer 'positions' is on the meta device"):
        StreamingModel(model, InferenceConfig(store=cfg.store, weights=path))
