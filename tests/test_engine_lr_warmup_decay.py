"""WarmupDecayLR: warmup as WarmupLR, then gamma = max(0, (T - i) / max(1, T - W))."""

import math

import pytest
import torch

from tiermem.engine.lr_schedules import WarmupDecayLR, build_lr_scheduler


def run(scheduler, optimizer, steps):
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_decay_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    config = {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": 0.0,
            "warmup_max_lr": 0.1,
            "warmup_num_steps": 5,
            "total_num_steps": 25,
        },
    }
    scheduler = build_lr_scheduler(optimizer, config)
    assert isinstance(scheduler, WarmupDecayLR)
    lrs = run(scheduler, optimizer, 30)
    assert lrs[0] == 0.0
    assert lrs[3] == pytest.approx(0.1 * math.log(4) / math.log(5))
    assert lrs[5] == pytest.approx(0.1)  # (25 - 5) / 20
    assert lrs[10] == pytest.approx(0.1 * (25 - 10) / 20)
    assert lrs[24] == pytest.approx(0.1 * 1 / 20)
    assert lrs[25] == 0.0 and lrs[29] == 0.0  # clamped at 0 past the end


def test_decay_returns_to_min_lr_not_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupDecayLR(
        optimizer,
        total_num_steps=6,
        warmup_min_lr=0.01,
        warmup_max_lr=0.05,
        warmup_num_steps=2,
        warmup_type="linear",
    )
    lrs = run(scheduler, optimizer, 8)
    assert lrs[1] == pytest.approx(0.01 + 0.04 * 1 / 2)
    assert lrs[4] == pytest.approx(0.01 + 0.04 * (6 - 4) / 4)
    assert lrs[6] == pytest.approx(0.01) and lrs[7] == pytest.approx(0.01)
