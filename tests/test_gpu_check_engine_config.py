"""The engine config bench/gpu_check.py builds: stage 3, params and optimizer on NVMe, bf16;
and the GPU budget option added only where the engine's config parser accepts it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from gpu_check import with_device_budget, zero3_nvme_config  # noqa: E402

from tiermem.engine.settings import engine_settings  # noqa: E402


def test_config_is_stage3_nvme_bf16(tmp_path):
    cfg = zero3_nvme_config(tmp_path, micro_batch=4, lr=1e-4, gas=2, sub_group_size=1000)
    settings = engine_settings(cfg, world_size=1)
    zero = settings.zero
    assert (zero.stage, zero.offload_param, zero.offload_optimizer) == (3, "nvme", "nvme")
    assert zero.param_nvme_path == zero.optimizer_nvme_path == (str(tmp_path),)
    assert zero.sub_group_size == 1000 and zero.pin_memory is True
    assert settings.precision.kind == "bf16"
    assert (settings.micro_batch_size, settings.gradient_accumulation_steps) == (4, 2)
    assert settings.optimizer.type == "AdamW" and settings.optimizer.lr == 1e-4


def test_device_budget_only_where_the_engine_accepts_it(tmp_path):
    cfg = zero3_nvme_config(tmp_path, micro_batch=1, lr=1e-4)
    budget = 24 << 30
    out, note = with_device_budget(cfg, budget)
    engine_settings(out, world_size=1)  # whatever came back parses
    if note.startswith("device_budget="):
        assert out.get("device_budget", out["zero_optimization"].get("device_budget")) == budget
    else:
        assert out == cfg and "no device_budget" in note
    assert "device_budget" not in cfg and "device_budget" not in cfg["zero_optimization"]
