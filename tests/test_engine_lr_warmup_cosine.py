"""WarmupCosineLR: a ratio of the optimizer's lr, warmup then cosine to cos_min_ratio."""

import math

import pytest
import torch

from tiermem.engine.config import parse_config
from tiermem.engine.lr_schedules import WarmupCosineLR, build_lr_scheduler


def run(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_cosine_values():
    cfg = parse_config(
        {
            "optimizer": {"type": "AdamW", "params": {"lr": 2e-3}},
            "scheduler": {
                "type": "WarmupCosineLR",
                "params": {
                    "total_num_steps": 24,
                    "warmup_num_steps": 4,
                    "warmup_min_ratio": 0.1,
                    "cos_min_ratio": 0.05,
                    "warmup_type": "linear",
                },
            },
        }
    )
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optimizer.lr)
    scheduler = build_lr_scheduler(optimizer, cfg.scheduler)
    assert isinstance(scheduler, WarmupCosineLR)
    lrs = run(scheduler, optimizer, 30)
    peak = 2e-3
    assert lrs[0] == pytest.approx(peak * 0.1)
    assert lrs[2] == pytest.approx(peak * (0.1 + 0.9 * 2 / 4))
    # after warmup: k = i - W + 1 over T - W = 20 steps
    for i, k in ((4, 1), (9, 6), (13, 10), (23, 20)):
        cosine = (1 + math.cos(math.pi * k / 20)) / 2
        assert lrs[i] == pytest.approx(peak * (0.05 + 0.95 * cosine)), i
    assert lrs[13] == pytest.approx(peak * (0.05 + 0.95 * 0.5))  # halfway
    assert lrs[23] == pytest.approx(peak * 0.05)
    assert lrs[29] == pytest.approx(peak * 0.05)  # stays at the floor past the end


def test_log_warmup_and_deepspeed_defaults():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLR(optimizer, total_num_steps=5000)
    assert (scheduler.warmup_num_steps, scheduler.cos_min_ratio, scheduler.warmup_type) == (
        1000,
        0.0001,
        "log",
    )
    assert scheduler.lr_at(0) == [0.0]
    assert scheduler.lr_at(99) == [pytest.approx(math.log(100) / math.log(1000))]


def test_total_not_after_warmup_drops_to_the_floor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLR(
        optimizer, total_num_steps=3, warmup_num_steps=5, cos_min_ratio=0.2, warmup_type="linear"
    )
    assert scheduler.lr_at(4) == [pytest.approx(0.8)]
    assert scheduler.lr_at(5) == [pytest.approx(0.2)]
