"""With a real transformers GPT-2 (built from a config, no download): a trained engine's
checkpoint exported with --hf loads with GPT2LMHeadModel.from_pretrained and gives the
engine's weights and logits; a folder written by save_pretrained loads with
engine.load_weights into the engine exactly."""

from __future__ import annotations

import pytest

transformers = pytest.importorskip(
    "transformers",
    reason="transformers is not installed (pip install 'tiermem[hf]'; scripts/bootstrap does)",
)

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import tiermem  # noqa: E402
from tiermem.engine.weights_export import export_weights  # noqa: E402

CFG = {
    "train_micro_batch_size_per_gpu": 2,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}},
    "zero_optimization": {
        "stage": 3,
        "offload_param": {"device": "cpu"},
        "offload_optimizer": {"device": "cpu"},
    },
}


def _gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16)
    return GPT2LMHeadModel(config).eval()  # no dropout: logits comparable


def _ids() -> torch.Tensor:
    return torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1))


def test_export_loads_with_from_pretrained(tmp_path):
    engine, *_ = tiermem.initialize(model=_gpt2(0), config=CFG)
    ids = _ids()
    engine.backward(engine(input_ids=ids, labels=ids).loss)
    engine.step()
    engine.save_checkpoint(tmp_path / "ckpt")
    full = engine.full_state_dict()
    with torch.no_grad():
        logits = engine(input_ids=ids).logits
    engine.close()

    export_weights(tmp_path / "ckpt", tmp_path / "hf", hf=True, max_shard_size=40_000)
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    state = loaded.state_dict()
    for name, value in full.items():
        assert torch.equal(state[name], value), name
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, logits)


def test_save_pretrained_folder_loads_into_the_engine(tmp_path):
    source = _gpt2(5)
    source.save_pretrained(tmp_path / "hf")
    engine, *_ = tiermem.initialize(model=_gpt2(0), config=CFG)
    report = engine.load_weights(tmp_path / "hf")
    assert report.missing_keys == () and report.unexpected_keys == ()
    got = engine.full_state_dict()
    engine.close()
    expected = source.state_dict()
    assert all(torch.equal(got[k], expected[k]) for k in got)
