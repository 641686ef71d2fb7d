"""WarmupLR: lr = min + (max - min) * gamma, gamma = log(i+1)/log(W) or i/W during warmup."""

import math

import pytest
import torch

from tiermem.engine.config import parse_config
from tiermem.engine.lr_schedules import WarmupLR, build_lr_scheduler


def make_optimizer(lr=0.5, groups=1):
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def lrs_over(optimizer, scheduler, steps):
    """The lr each optimizer step 0..steps-1 ran with."""
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_log_warmup_values():
    cfg = parse_config(
        {
            "scheduler": {
                "type": "WarmupLR",
                "params": {"warmup_min_lr": 0.001, "warmup_max_lr": 0.011, "warmup_num_steps": 10},
            }
        }
    )
    optimizer = make_optimizer()
    scheduler = build_lr_scheduler(optimizer, cfg.scheduler)
    assert isinstance(scheduler, WarmupLR)
    lrs = lrs_over(optimizer, scheduler, 15)
    delta = 0.011 - 0.001
    assert lrs[0] == pytest.approx(0.001)  # log(1) = 0
    assert lrs[1] == pytest.approx(0.001 + delta * math.log(2) / math.log(10))
    assert lrs[4] == pytest.approx(0.001 + delta * math.log(5) / math.log(10))
    assert lrs[9] == pytest.approx(0.011)  # log(10)/log(10)
    assert lrs[10] == pytest.approx(0.011) and lrs[14] == pytest.approx(0.011)
    assert scheduler.get_last_lr() == [pytest.approx(0.011)]


def test_linear_warmup_values():
    optimizer = make_optimizer()
    scheduler = WarmupLR(
        optimizer, warmup_min_lr=0.0, warmup_max_lr=0.02, warmup_num_steps=8, warmup_type="linear"
    )
    lrs = lrs_over(optimizer, scheduler, 12)
    assert lrs[0] == 0.0
    assert lrs[2] == pytest.approx(0.02 * 2 / 8)
    assert lrs[7] == pytest.approx(0.02 * 7 / 8)
    assert lrs[8] == pytest.approx(0.02) and lrs[11] == pytest.approx(0.02)


def test_fewer_than_two_warmup_steps_act_as_two():
    # DeepSpeed raises warmup_num_steps below 2 to 2
    optimizer = make_optimizer()
    scheduler = WarmupLR(
        optimizer, warmup_min_lr=0.0, warmup_max_lr=1.0, warmup_num_steps=0, warmup_type="linear"
    )
    assert lrs_over(optimizer, scheduler, 3) == [0.0, pytest.approx(0.5), pytest.approx(1.0)]


def test_max_lr_defaults_to_the_optimizer_lr_and_lists_are_per_group():
    optimizer = make_optimizer(lr=0.3, groups=2)
    optimizer.param_groups[1]["lr"] = 0.6
    scheduler = WarmupLR(
        optimizer, warmup_min_lr=[0.0, 0.1], warmup_num_steps=4, warmup_type="linear"
    )
    for _ in range(2):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == [
        pytest.approx(0.3 * 2 / 4),
        pytest.approx(0.1 + (0.6 - 0.1) * 2 / 4),
    ]


def test_bad_arguments():
    with pytest.raises(ValueError, match="warmup_type"):
        WarmupLR(make_optimizer(), warmup_type="cosine")
    with pytest.raises(ValueError, match="one value per optimizer parameter group"):
        WarmupLR(make_optimizer(groups=2), warmup_max_lr=[0.1])
