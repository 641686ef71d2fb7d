"""The schedulers are real torch LRSchedulers: state_dict/load_state_dict resume the curve,
and the config's last_batch_iteration resumes after that many + 1 steps."""

import pytest
import torch
from torch.optim.lr_scheduler import LRScheduler

from tiermem.engine.lr_schedules import build_lr_scheduler

CONFIGS = [
    {"type": "WarmupLR", "params": {"warmup_max_lr": 0.1, "warmup_num_steps": 6}},
    {
        "type": "WarmupDecayLR",
        "params": {"warmup_max_lr": 0.1, "warmup_num_steps": 4, "total_num_steps": 20},
    },
    {
        "type": "WarmupCosineLR",
        "params": {"warmup_num_steps": 4, "total_num_steps": 20, "warmup_type": "linear"},
    },
]


def fresh():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)


def advance(optimizer, scheduler, steps):
    for _ in range(steps):
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["type"])
def test_state_dict_round_trip_continues_the_curve(config):
    reference_opt = fresh()
    reference = build_lr_scheduler(reference_opt, config)
    assert isinstance(reference, LRScheduler)
    advance(reference_opt, reference, 15)
    expected = reference.get_last_lr()

    first_opt = fresh()
    first = build_lr_scheduler(first_opt, config)
    advance(first_opt, first, 7)
    saved_sched, saved_opt = first.state_dict(), first_opt.state_dict()
    assert saved_sched["last_epoch"] == 7

    resumed_opt = fresh()
    resumed = build_lr_scheduler(resumed_opt, config)
    resumed_opt.load_state_dict(saved_opt)
    resumed.load_state_dict(saved_sched)
    advance(resumed_opt, resumed, 8)
    assert resumed.get_last_lr() == pytest.approx(expected)
    assert resumed_opt.param_groups[0]["lr"] == pytest.approx(expected[0])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["type"])
def test_last_batch_iteration_resumes(config):
    reference_opt = fresh()
    reference = build_lr_scheduler(reference_opt, config)
    advance(reference_opt, reference, 10)
    resumed_cfg = {
        "type": config["type"],
        "params": {**config["params"], "last_batch_iteration": 9},
    }
    resumed_opt = fresh()
    resumed = build_lr_scheduler(resumed_opt, resumed_cfg)
    assert resumed.last_epoch == 10
    assert resumed_opt.param_groups[0]["lr"] == pytest.approx(reference.get_last_lr()[0])
