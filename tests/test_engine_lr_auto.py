""" "auto" in scheduler params: step counts come from build_lr_scheduler's arguments,
warmup_min_lr means 0 and warmup_max_lr the optimizer's lr."""

import math

import pytest
import torch

from tiermem.engine.config import ConfigError, parse_config
from tiermem.engine.lr_schedules import build_lr_scheduler

HF_SCHEDULER = {
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": "auto",
            "warmup_max_lr": "auto",
            "warmup_num_steps": "auto",
            "total_num_steps": "auto",
        },
    }
}


def optimizer(lr=0.4, groups=1):
    return torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)], lr=lr
    )


def test_auto_values_resolved_from_arguments_and_optimizer():
    cfg = parse_config(HF_SCHEDULER)
    opt = optimizer(lr=0.4)
    scheduler = build_lr_scheduler(opt, cfg.scheduler, total_steps=30, warmup_steps=10)
    assert scheduler.total_num_steps == 30 and scheduler.warmup_num_steps == 10
    assert scheduler.lr_at(0) == [0.0]
    assert scheduler.lr_at(3) == [pytest.approx(0.4 * math.log(4) / math.log(10))]
    assert scheduler.lr_at(20) == [pytest.approx(0.4 * (30 - 20) / 20)]


@pytest.mark.parametrize(
    ("kwargs", "path", "kwarg"),
    [
        ({"total_steps": 30}, "scheduler.params.warmup_num_steps", "warmup_steps="),
        ({"warmup_steps": 3}, "scheduler.params.total_num_steps", "total_steps="),
    ],
)
def test_auto_step_count_without_argument_is_an_error(kwargs, path, kwarg):
    cfg = parse_config(HF_SCHEDULER)
    with pytest.raises(ConfigError) as info:
        build_lr_scheduler(optimizer(), cfg.scheduler, **kwargs)
    assert info.value.path == path and kwarg in str(info.value)


def test_explicit_config_value_wins_over_argument():
    cfg = parse_config(
        {
            "scheduler": {
                "type": "WarmupCosineLR",
                "params": {"total_num_steps": 50, "warmup_num_steps": 5},
            }
        }
    )
    scheduler = build_lr_scheduler(optimizer(), cfg.scheduler, total_steps=999, warmup_steps=1)
    assert scheduler.total_num_steps == 50 and scheduler.warmup_num_steps == 5


def test_per_group_lr_list_length_is_checked():
    cfg = parse_config(
        {"scheduler": {"type": "WarmupLR", "params": {"warmup_max_lr": [0.1, 0.2, 0.3]}}}
    )
    with pytest.raises(ConfigError) as info:
        build_lr_scheduler(optimizer(groups=2), cfg.scheduler)
    assert info.value.path == "scheduler.params.warmup_max_lr"
    scheduler = build_lr_scheduler(optimizer(groups=3), cfg.scheduler)
    assert scheduler.max_lrs == [0.1, 0.2, 0.3]
