"""Offload device "auto": tiermem.initialize takes the planner's choice for the model and machine.

The host memory the planner sees is replaced (psutil's ``virtual_memory``) by
a value between what two placements need, so the choice is forced by the
arithmetic and does not depend on the machine running the test.
"""

from __future__ import annotations

import types

import psutil
import pytest
import torch

import tiermem
from tiermem.engine.auto_placement import plan_placement
from tiermem.engine.config import ConfigError, parse_config
from tiermem.planning import Placement
from tiermem.train.models import GPT, GPTConfig


def _config(tmp_path, *, param="auto", optimizer="auto", stage=3, nvme=True) -> dict:
    def section(device):
        out = {"device": device}
        if nvme:  # not there yet: the store makes it
            out["nvme_path"] = str(tmp_path / "swap")
        return out

    return {
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {
            "stage": stage,
            "stage3_prefetch_bucket_size": 2 * 256 * 256,
            "offload_param": section(param),
            "offload_optimizer": section(optimizer),
        },
    }


def _fake_memory(monkeypatch, available: int) -> None:
    fake = types.SimpleNamespace(available=available, total=available)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: fake)


def _needs(tmp_path, model) -> dict[Placement, int]:
    cfg = parse_config(_config(tmp_path))
    result = plan_placement(
        cfg,
        model=model,
        world_size=1,
        micro_batch_size=2,
        gradient_accumulation_steps=1,
        dtype_bytes=4,
        placements=list(Placement),
    )
    return {e.placement: e.needed["host"] for e in result.estimates}


def _placement(engine) -> tuple[str, str]:
    zero = engine.settings.zero
    return zero.offload_param, zero.offload_optimizer


@pytest.fixture
def model():
    # wide enough that its parameter shards outweigh the NVMe placement's buffers
    torch.manual_seed(0)
    return GPT(GPTConfig(hidden_size=256, num_layers=4, num_heads=4, seq_len=16))


def test_auto_with_room_keeps_everything_on_the_device(tmp_path, model, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the forced host-memory arithmetic below is for CPU-only machines")
    _fake_memory(monkeypatch, 1 << 40)
    engine, *_ = tiermem.initialize(model=model, config=_config(tmp_path))
    assert _placement(engine) == ("none", "none")
    assert engine.placements.stores == []
    engine.close()


def test_auto_with_little_memory_offloads_to_nvme(tmp_path, model, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("the forced host-memory arithmetic below is for CPU-only machines")
    _fake_memory(monkeypatch, 1 << 40)
    needs = _needs(tmp_path, model)
    assert needs[Placement.PARAMS_OPTIMIZER_NVME] < needs[Placement.OPTIMIZER_NVME]
    between = (needs[Placement.PARAMS_OPTIMIZER_NVME] + needs[Placement.OPTIMIZER_NVME]) // 2
    _fake_memory(monkeypatch, int(between / 0.9))
    engine, *_ = tiermem.initialize(model=model, config=_config(tmp_path))
    assert _placement(engine) == ("nvme", "nvme")
    assert len(engine.placements.stores) == 1
    assert (tmp_path / "swap").is_dir()
    engine.close()


def test_auto_with_the_other_side_fixed(tmp_path, model, monkeypatch):
    _fake_memory(monkeypatch, 1 << 40)
    cfg = _config(tmp_path, param="none", optimizer="auto", stage=2, nvme=False)
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    assert _placement(engine)[0] == "none"
    assert _placement(engine)[1] in ("none", "cpu")
    engine.close()


def test_auto_when_nothing_fits_names_the_key(tmp_path, model, monkeypatch):
    _fake_memory(monkeypatch, 1 << 20)
    with pytest.raises(ConfigError) as info:
        tiermem.initialize(model=model, config=_config(tmp_path, param="none"))
    assert info.value.path == "zero_optimization.offload_optimizer.device"
    assert "no placement fits" in str(info.value)


def test_auto_without_nvme_path_never_picks_nvme(tmp_path, model, monkeypatch):
    _fake_memory(monkeypatch, 1 << 20)
    with pytest.raises(ConfigError, match="no placement fits") as info:
        tiermem.initialize(model=model, config=_config(tmp_path, nvme=False))
    assert "nvme" not in str(info.value).split("(", 1)[1].split(":")[0]


def test_auto_in_init_context_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="needs the model") as info:
        tiermem.init_context(config=_config(tmp_path))
    assert info.value.path == "zero_optimization.offload_param.device"


def test_auto_round_trips_through_the_config(tmp_path):
    cfg = parse_config(_config(tmp_path))
    assert cfg.zero_optimization.offload_param.device == "auto"
    assert cfg.to_dict()["zero_optimization"]["offload_optimizer"]["device"] == "auto"
