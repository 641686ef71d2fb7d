"""``sub_group_size`` bounds a sub-group of whole parameters, as in DeepSpeed; it never cuts one.

A parameter larger than ``sub_group_size`` is a sub-group of its own; smaller
neighbours are packed up to the bound; only ``sub_group_split_params`` cuts
parameters every ``sub_group_size`` elements.
"""

from __future__ import annotations

import torch
from torch import nn

import tiermem
from tiermem.engine.optimizer_step import sub_groups


def test_sub_groups_pack_whole_parameters_up_to_the_bound():
    # parameters [0,10) [10,20) [20,30) [30,200) [200,210), bound 50
    starts = [0, 10, 20, 30, 200]
    assert sub_groups(210, 50, starts) == [(0, 30), (30, 200), (200, 210)]
    # each parameter larger than the bound, or too large to share: one each
    assert sub_groups(1000, 100, [0, 50, 250, 260]) == [(0, 50), (50, 250), (250, 260), (260, 1000)]
    assert sub_groups(1000, 10**9, [0, 50, 250, 260]) == [(0, 1000)]
    assert sub_groups(1000, 100, None) == [(0, 1000)]  # one parameter: never cut
    assert sub_groups(0, 100, [0]) == []


def test_split_params_cuts_every_sub_group_size_elements():
    assert sub_groups(250, 100, [0, 50], split=True) == [(0, 100), (100, 200), (200, 250)]


class TwoLinears(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.linears:
            x = layer(x)
        return (x * x).mean()


def _train(tmp_path, sub_group_size: int, **extra) -> tuple[list[float], list[int]]:
    torch.manual_seed(0)
    nvme = {"device": "nvme", "nvme_path": str(tmp_path / f"swap{sub_group_size}")}
    cfg = {
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2}},
        "zero_optimization": {
            "stage": 3,
            "sub_group_size": sub_group_size,
            "stage3_max_live_parameters": 100,
            "offload_param": nvme,
            "offload_optimizer": dict(nvme),
            **extra,
        },
    }
    with tiermem.init_context(config=cfg):
        model = TwoLinears(32)
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    x = torch.randn(2, 32)
    losses = []
    try:
        for _ in range(3):
            loss = engine(x)
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        counts = [len(engine.shard_optimizer._chunks[g.key]) for g in engine.groups]
    finally:
        engine.close()
    return losses, counts


def test_small_sub_group_size_gives_one_sub_group_per_parameter_and_the_same_training(tmp_path):
    small, small_counts = _train(tmp_path, 100)
    assert small_counts == [2, 2]  # weight (1024 > 100) alone, bias (32) alone: never cut
    whole, whole_counts = _train(tmp_path, 10**9)
    assert whole_counts == [1, 1]
    cut, cut_counts = _train(tmp_path, 100, sub_group_split_params=True)
    assert cut_counts == [11, 11]  # 1056 elements cut every 100
    assert small == whole == cut  # Adam is elementwise: sub-grouping changes no value
