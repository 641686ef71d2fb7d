"""Flat parameter groups: one per module, tied weights in one group, padding, views, states."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zero_helpers import make_model

from tiermem.engine.comm import Communicator
from tiermem.engine.param_home import DeviceParamHome
from tiermem.engine.partition import (
    TRANSITIONS,
    FlatParamGroup,
    GroupState,
    make_layout,
    plan_groups,
)


def test_tied_weight_belongs_to_one_group_and_both_modules_need_it():
    model = make_model()
    plan = plan_groups(model)
    names = [name for _, members in plan.members for name, _ in members]
    assert len(names) == len(set(names))
    assert "wte.weight" in names and "lm_head.weight" not in names
    wte_group = next(i for i, (m, _) in enumerate(plan.members) if m == "wte")
    assert plan.module_uses[model.wte] == (wte_group,)
    assert plan.module_uses[model.lm_head] == (wte_group,)  # owns nothing, uses the tied weight
    # every parameter of the model is in exactly one group
    assert sorted(id(p) for _, ms in plan.members for _, p in ms) == sorted(
        id(p) for p in model.parameters()
    )
    assert model.blocks not in plan.module_uses  # a container without own parameters


def test_layout_pads_to_the_number_of_shards():
    lin = nn.Linear(3, 3)  # 12 elements
    lay = make_layout(0, "lin", list(lin.named_parameters()), num_shards=5, shard_rank=4)
    assert lay.numel == 12 and lay.padded_numel == 15 and lay.shard_numel == 3
    assert (lay.shard_start, lay.shard_end) == (12, 15)
    assert [s.offset for s in lay.slots] == [0, 9]


def _group(module: nn.Module, *, partitioned: bool) -> FlatParamGroup:
    members = list(module.named_parameters())
    lay = make_layout(0, "m", members, num_shards=1, shard_rank=0)
    return FlatParamGroup(
        lay,
        [p for _, p in members],
        dtype=torch.float32,
        device=torch.device("cpu"),
        comm=Communicator(),
        home=DeviceParamHome(torch.device("cpu")) if partitioned else None,
    )


def test_unpartitioned_params_are_views_of_the_flat_buffer_and_nothing_is_patched():
    lin = nn.Linear(4, 2)
    before = {name: dict(vars(p)) for name, p in lin.named_parameters()}
    expected = {name: p.detach().clone() for name, p in lin.named_parameters()}
    group = _group(lin, partitioned=False)
    group.install(group.flatten_fp32())
    assert group.state is GroupState.GATHERED
    group.flat.add_(1.0)  # writing the flat buffer changes the parameters
    for name, p in lin.named_parameters():
        assert torch.equal(p.detach(), expected[name] + 1.0)
        assert dict(vars(p)) == before[name]  # no attribute added to nn.Parameter


def test_partitioned_group_gathers_and_releases_with_refcounts():
    lin = nn.Linear(4, 2)
    values = {name: p.detach().clone() for name, p in lin.named_parameters()}
    group = _group(lin, partitioned=True)
    group.install(group.flatten_fp32())
    assert group.state is GroupState.SHARDED
    assert all(p.numel() == 0 for p in lin.parameters())
    group.acquire()
    group.acquire()
    assert group.state is GroupState.GATHERED
    for name, p in lin.named_parameters():
        assert torch.equal(p.detach(), values[name])
    group.release()
    assert group.state is GroupState.GATHERED  # one user left
    group.release()
    assert group.state is GroupState.SHARDED and lin.weight.numel() == 0
    with pytest.raises(RuntimeError, match="released more often"):
        group.release()


def test_transition_table_refuses_illegal_moves():
    assert GroupState.GATHERED not in TRANSITIONS[GroupState.SHARDED]
    group = _group(nn.Linear(2, 2), partitioned=True)
    group.install(group.flatten_fp32())
    with pytest.raises(RuntimeError, match="illegal transition SHARDED -> GATHERED"):
        group._move(GroupState.GATHERED)


def test_mixed_frozen_and_trainable_in_one_module_is_refused():
    lin = nn.Linear(2, 2)
    lin.bias.requires_grad_(False)
    with pytest.raises(ValueError, match="mixes trainable and frozen"):
        _group(lin, partitioned=False)
