"""Checkpoint save and load cost in proportion to the pieces they handle.

With parameters cut into many sub-groups (``sub_group_split_params``, as
DeepSpeed's NVMe test config asked of tiermem before ``sub_group_size`` stopped
cutting parameters), a load used to scan every saved piece of a parameter for
each piece it filled, and every eviction ranked and sorted every cached copy:
O(pieces^2). Four times the pieces must cost at most eight times as much, and a
load must grow no faster than twice the save's growth.

[Note: the cost is counted, not timed: the number of Python lines executed in
tiermem's own code (engine and store) while saving and loading, through
``sys.settrace``. It does not depend on the machine's load, and a quadratic
scan shows as lines whether or not it calls anything.]
"""

from __future__ import annotations

from pathlib import Path

import torch
from line_counts import OWN_CODE, lines_executed
from torch import nn

import tiermem
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint

PIECE = 16  # elements per optimizer sub-group


class TwoParams(nn.Module):
    def __init__(self, numel: int) -> None:
        super().__init__()
        self.a = nn.Linear(1, numel, bias=False)
        self.b = nn.Linear(numel, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)).sum()


def _lines(fn) -> int:
    """Lines of tiermem's own code that ``fn()`` executes."""
    return lines_executed(fn, OWN_CODE)


def _save_and_load_lines(tmp_path: Path, pieces_per_param: int) -> tuple[int, int]:
    torch.manual_seed(0)
    nvme = {"device": "nvme", "nvme_path": str(tmp_path / "swap")}
    cfg = {
        "train_micro_batch_size_per_gpu": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {
            "stage": 3,
            "offload_param": nvme,
            "offload_optimizer": dict(nvme),
            "sub_group_size": PIECE,
            "sub_group_split_params": True,
            "stage3_param_persistence_threshold": 0,
        },
    }
    engine, *_ = tiermem.initialize(model=TwoParams(PIECE * pieces_per_param), config=cfg)
    try:
        engine.backward(engine(torch.ones(1, 1)))
        engine.step()
        ckpt = tmp_path / "ckpt"
        save = _lines(lambda: save_checkpoint(engine, ckpt))
        load = _lines(lambda: load_checkpoint(engine, ckpt))
    finally:
        engine.close()
    return save, load


def test_load_cost_grows_like_save_cost(tmp_path):
    small = _save_and_load_lines(tmp_path / "small", 60)
    large = _save_and_load_lines(tmp_path / "large", 240)
    save_growth, load_growth = large[0] / small[0], large[1] / small[1]
    detail = f"save {small[0]} -> {large[0]} lines, load {small[1]} -> {large[1]} lines"
    assert save_growth <= 8, f"4x the pieces cost {save_growth:.1f}x to save ({detail})"
    assert load_growth <= 8, f"4x the pieces cost {load_growth:.1f}x to load ({detail})"
    assert load_growth <= 2 * save_growth, (
        f"load grew {load_growth:.1f}x, save {save_growth:.1f}x ({detail})"
    )
