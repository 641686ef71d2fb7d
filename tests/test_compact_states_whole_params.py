"""Compact (bf16 / int8) optimizer states use the same sub-groups as the fp32
tiers: runs of whole parameters of at most ``sub_group_size`` elements, a larger
parameter alone; ``split_params`` cuts every ``sub_group_size`` elements."""

from __future__ import annotations

import torch

from tiermem.engine.compact_states import CompactHostShardOptimizer
from tiermem.engine.optimizer_step import sub_groups


def _chunks(*, split: bool, state_dtype: str) -> list[tuple[int, int]]:
    opt = CompactHostShardOptimizer(
        sub_group_size=4, state_dtype=state_dtype, quant_block=256, split_params=split
    )
    master = torch.arange(13, dtype=torch.float32)
    opt.add(7, master, [0, 2, 4, 10])  # parameters of 2, 2, 6 and 3 elements
    access = opt.state_access()
    assert torch.equal(access_master(access, 7), master)
    return access.chunks(7)


def access_master(access, key: int) -> torch.Tensor:
    parts = []
    for lo, hi in access.chunks(key):
        with access.read(key, lo, hi) as states:
            parts.append(states["master"].clone())
    return torch.cat(parts)


def test_compact_sub_groups_hold_whole_parameters():
    for dtype in ("bf16", "int8"):
        got = _chunks(split=False, state_dtype=dtype)
        assert got == [(0, 4), (4, 10), (10, 13)], (dtype, got)
        assert got == sub_groups(13, 4, [0, 2, 4, 10])


def test_compact_sub_groups_split_when_asked():
    assert _chunks(split=True, state_dtype="bf16") == [(0, 4), (4, 8), (8, 12), (12, 13)]
