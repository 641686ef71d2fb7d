"""The engine states the NVMe bytes one step needs at least from its placement
(tiermem.engine.io_minimum), per group shard: params read twice and written once,
Adam states read and written once, gradients only when they go through the store."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tiermem
from tiermem.engine.io_minimum import GroupTraffic, min_bytes_per_step


def test_formula_counts_each_part_once():
    groups = [GroupTraffic(100, True, False), GroupTraffic(10, True, True)]
    out = min_bytes_per_step(groups, params_on_nvme=True, optimizer_on_nvme=True, param_itemsize=2)
    # params: 2 reads of the gathered group (2 B), writes of both; Adam: 12 B read + written
    assert out["read"] == 2 * 100 * 2 + 110 * 12
    assert out["write"] == 110 * 2 + 110 * 12
    assert out["total"] == out["read"] + out["write"]


def test_gradients_count_when_they_go_through_the_store():
    groups = [GroupTraffic(100, True, False)]
    early = min_bytes_per_step(
        groups, params_on_nvme=False, optimizer_on_nvme=True, param_itemsize=2
    )
    clipped = min_bytes_per_step(
        groups,
        params_on_nvme=False,
        optimizer_on_nvme=True,
        param_itemsize=2,
        update_in_backward=False,
    )
    accumulated = min_bytes_per_step(
        groups, params_on_nvme=True, optimizer_on_nvme=True, param_itemsize=2, micro_steps=3
    )
    assert early == {"read": 1200, "write": 1200, "total": 2400}
    assert clipped["read"] == clipped["write"] == 1200 + 400
    assert accumulated["read"] == 3 * 2 * 200 + 1200 + 3 * 400
    assert accumulated["write"] == 200 + 1200 + 3 * 400


def test_frozen_groups_are_read_not_written():
    out = min_bytes_per_step(
        [GroupTraffic(50, False, False)],
        params_on_nvme=True,
        optimizer_on_nvme=True,
        param_itemsize=4,
    )
    assert out == {"read": 2 * 50 * 4, "write": 0, "total": 400}


@pytest.mark.parametrize("where", ["nvme", "cpu"])
def test_engine_states_it_from_its_groups(tmp_path, where):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))
    zero = {
        "stage": 3,
        "offload_param": {"device": where, "nvme_path": str(tmp_path)},
        "offload_optimizer": {"device": where, "nvme_path": str(tmp_path)},
        "stage3_param_persistence_threshold": 0,
    }
    cfg = {
        "train_batch_size": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "bf16": {"enabled": True},
        "zero_optimization": zero,
    }
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    try:
        numel = sum(g.layout.shard_numel for g in engine.groups)
        assert numel >= 32 * 64 + 64 + 64 * 8 + 8
        out = engine.min_bytes_per_step()
        if where == "nvme":
            assert out["read"] == 2 * numel * 2 + numel * 12
            assert out["write"] == numel * 2 + numel * 12
        else:
            assert out == {"read": 0, "write": 0, "total": 0}
    finally:
        engine.close()
