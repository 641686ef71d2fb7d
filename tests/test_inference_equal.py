"""Streamed forward passes give the in-memory model's logits bit for bit, with a
host budget smaller than the model (NVMe home) and the device tier's stand-in."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tiermem.inference import InferenceConfig, StreamingModel
from tiermem.store import StoreConfig, TierKind
from tiermem.train.models import GPT, GPTConfig

CFG = GPTConfig(hidden_size=64, num_layers=4, num_heads=2, seq_len=32)
BLOCK_BYTES = 200_000  # one block of CFG in fp32, rounded up


def _models(seed: int = 0) -> tuple[GPT, GPT]:
    torch.manual_seed(seed)
    model = GPT(CFG)
    return model, copy.deepcopy(model).eval()


def test_nvme_home_host_budget_below_model(tmp_path):
    model, ref = _models()
    model_bytes = sum(p.numel() * p.element_size() for p in ref.parameters())
    budget = 3 * BLOCK_BYTES  # holds about three of the eight units' bytes
    assert budget < model_bytes
    cfg = InferenceConfig(
        store=StoreConfig(
            host_bytes=budget, nvme_paths=(tmp_path,), prefetch_bytes=2 * BLOCK_BYTES
        ),
        compute_tier=TierKind.HOST,
    )
    ids = torch.randint(0, CFG.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(ids)
    with StreamingModel(model, cfg) as streamed:
        assert streamed.weight_bytes > budget
        assert [n for n, _ in streamed.units][2:6] == [f"blocks.{i}" for i in range(4)]
        # the module's parameters are placeholders now: nothing of the model stays in RAM
        assert all(p.numel() == 0 for p in model.parameters())
        outs = [streamed(ids) for _ in range(3)]  # pass 1 records, 2 and 3 replay
        host = streamed.store.tier(TierKind.HOST)
        snap = streamed.store.telemetry.snapshot()
        report = streamed.report
    for got in outs:
        assert got.dtype == want.dtype and torch.equal(got, want)
    assert 0 < host.peak <= budget
    assert snap["evictions"]["host"] > 0
    # the first pass read the whole model from NVMe, and each later pass all of it
    # but what the host budget can keep across passes (the store may keep a unit
    # or two resident, depending on when its reads finish)
    assert snap["bytes_moved"]["nvme->host"] >= 3 * model_bytes - 2 * budget
    assert report.prefetch_hits > 0 and report.tokens == ids.numel()
    assert all(p.numel() == 0 for p in model.parameters())


@pytest.mark.parametrize("home", [TierKind.NVME, TierKind.HOST])
def test_device_compute_tier(tmp_path, home):
    """Units fetched into the device tier (CUDA, or its host stand-in here)."""
    model, ref = _models(seed=2)
    cfg = InferenceConfig(
        store=StoreConfig(
            device_bytes=2 * BLOCK_BYTES + 8192,
            host_bytes=(2 if home is TierKind.NVME else 6) * BLOCK_BYTES,
            nvme_paths=(tmp_path,),
            prefetch_bytes=BLOCK_BYTES,
        ),
        home=home,
        compute_tier=TierKind.DEVICE,
    )
    ids = torch.randint(0, CFG.vocab_size, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = ref(ids)
    with StreamingModel(model, cfg) as streamed:
        got = [streamed(ids).cpu() for _ in range(2)]
        dev = streamed.store.tier(TierKind.DEVICE)
        moved = streamed.store.telemetry.snapshot()["bytes_moved"]
    assert all(torch.equal(g, want) for g in got)
    assert 0 < dev.peak <= dev.budget
    assert moved["host->device"] >= 2 * streamed.weight_bytes - 2 * 65536  # tied head re-read


class _Scaled(nn.Module):
    """A model with a parameter of its own around a Sequential (a nested unit)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.randn(32))
        self.layers = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x * self.scale) * self.scale


def test_any_module_with_root_parameter(tmp_path):
    torch.manual_seed(4)
    model = _Scaled()
    ref = copy.deepcopy(model)
    x = torch.randn(5, 32)
    with torch.no_grad():
        want = ref(x)
    cfg = InferenceConfig(store=StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path,)))
    with StreamingModel(model, cfg) as streamed:
        assert [n for n, _ in streamed.units] == ["(root)", "layers.0", "layers.2"]
        got = streamed(x)
        assert streamed.report.tokens == 0
    assert torch.equal(got, want)
