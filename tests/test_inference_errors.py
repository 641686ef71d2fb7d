"""Bad input to streaming inference: clear errors naming the unit, field or
size, raised before the model's weights are moved."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from tiermem.inference import InferenceConfig, InferenceError, StreamingModel
from tiermem.store import StoreConfig, StoreScheduleWarning, TierKind
from tiermem.train.models import GPT, GPTConfig

CFG = GPTConfig(hidden_size=64, num_layers=2, num_heads=2, seq_len=16)
BLOCK = (12 * 64 * 64 + 13 * 64) * 4  # one block's fp32 bytes (before 4 KiB rounding)


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_budget_below_largest_block_names_it(tmp_path):
    torch.manual_seed(0)
    model = GPT(CFG)
    before = _params(model)
    cfg = InferenceConfig(
        store=StoreConfig(host_bytes=100_000, nvme_paths=(tmp_path,)), compute_tier=TierKind.HOST
    )
    with pytest.raises(InferenceError) as exc:
        StreamingModel(model, cfg)
    msg = str(exc.value)
    assert "'blocks.0'" in msg and "HOST" in msg and "StoreConfig.host_bytes=100000" in msg
    need = int(re.search(r"needs (\d+) bytes", msg).group(1))
    assert BLOCK <= need < BLOCK + 4096
    # nothing was moved: the model still has its weights, no swap file was made
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert list(tmp_path.iterdir()) == []


def test_device_budget_below_largest_block(tmp_path):
    cfg = InferenceConfig(
        store=StoreConfig(device_bytes=150_000, host_bytes=1 << 20, nvme_paths=(tmp_path,)),
        compute_tier=TierKind.DEVICE,
    )
    with pytest.raises(InferenceError, match=r"unit 'blocks\.0' .* DEVICE tier .*device_bytes"):
        StreamingModel(GPT(CFG), cfg)


def test_host_home_needs_the_whole_model(tmp_path):
    cfg = InferenceConfig(
        store=StoreConfig(host_bytes=300_000, device_bytes=1 << 20),
        home=TierKind.HOST,
        compute_tier=TierKind.DEVICE,
    )
    with pytest.raises(InferenceError, match=r"weights take \d+ bytes .*host_bytes=300000"):
        StreamingModel(GPT(CFG), cfg)


def test_config_errors():
    with pytest.raises(InferenceError, match="home is NVME but StoreConfig.nvme_paths is empty"):
        InferenceConfig(store=StoreConfig(), home=TierKind.NVME)
    with pytest.raises(InferenceError, match="compute_tier: expected DEVICE or HOST"):
        InferenceConfig(store=StoreConfig(), compute_tier=TierKind.NVME)
    with pytest.raises(InferenceError, match="InferenceConfig.store"):
        InferenceConfig(store={"host_bytes": 1})
    with pytest.raises(InferenceError, match="sequence of module names"):
        InferenceConfig(store=StoreConfig(), units="blocks.0")


def test_unknown_unit_name(tmp_path):
    cfg = InferenceConfig(store=StoreConfig(nvme_paths=(tmp_path,)), units=("blocks.0", "blocks.9"))
    with pytest.raises(InferenceError, match=r"no module named 'blocks\.9'.*blocks\.1"):
        StreamingModel(GPT(CFG), cfg)


def test_bad_generate_arguments_and_closed(tmp_path):
    cfg = InferenceConfig(store=StoreConfig(host_bytes=2 << 20, nvme_paths=(tmp_path,)))
    streamed = StreamingModel(GPT(CFG), cfg)
    with pytest.raises(InferenceError, match="input_ids: expected integer token ids"):
        streamed.generate(torch.zeros(1, 3), 2)
    with pytest.raises(InferenceError, match=r"input_ids: expected a \(batch, time\) tensor"):
        streamed.generate(torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(InferenceError, match="max_new_tokens: expected an int >= 0, got -1"):
        streamed.generate(torch.zeros(1, 3, dtype=torch.long), -1)
    # an error inside a forward leaves no unit fetched: the next call works
    with pytest.raises(ValueError, match="longer than seq_len"):
        streamed(torch.zeros(1, CFG.seq_len + 1, dtype=torch.long))
    # (the failed first pass recorded an empty schedule, which the store drops)
    with pytest.warns(StoreScheduleWarning):
        assert streamed(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, CFG.vocab_size)
    streamed.close()
    with pytest.raises(InferenceError, match="closed"):
        streamed(torch.zeros(1, 3, dtype=torch.long))


def test_generate_needs_logits(tmp_path):
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 1))  # (b, t, 1), fine
    cfg = InferenceConfig(store=StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path,)))
    with StreamingModel(model, cfg) as streamed:
        assert streamed.generate(torch.tensor([[1, 2]]), 1).shape == (1, 3)
    flat = nn.Sequential(nn.Embedding(10, 8), nn.Flatten(), nn.Linear(16, 10))
    with StreamingModel(flat, cfg) as streamed:
        with pytest.raises(InferenceError, match=r"\(batch, time, vocab\) logits"):
            streamed.generate(torch.tensor([[1, 2]]), 1)


def test_unsupported_dtype(tmp_path):
    model = nn.Linear(4, 4).to(torch.float64)
    cfg = InferenceConfig(store=StoreConfig(nvme_paths=(tmp_path,)))
    with pytest.raises(InferenceError, match=r"parameter 'weight' has dtype torch.float64"):
        StreamingModel(model, cfg)
