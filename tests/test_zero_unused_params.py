"""Parameters that get no gradient are left alone, as torch's optimizers leave grad=None params.

A module used only on some steps, and one never used: no weight decay, no
momentum step for them, and the bias correction of the others is not
disturbed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zero_helpers import config, max_rel_diff, run_ranks

import tiermem


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(8, 8)
        self.sometimes = nn.Linear(8, 8)
        self.never = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, y: torch.Tensor, use_branch: bool) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        if use_branch:
            h = h + torch.tanh(self.sometimes(h))
        return F.cross_entropy(self.head(h), y)


def data(step: int, rank: int = 0, world: int = 1):
    gen = torch.Generator().manual_seed(step)
    x, y = torch.randn(8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)
    per = 8 // world
    return x[rank * per : (rank + 1) * per], y[rank * per : (rank + 1) * per], step % 3 == 0


def torch_losses(steps: int) -> tuple[list[float], dict]:
    model = Branchy()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.99), weight_decay=0.1)
    losses = []
    for step in range(steps):
        loss = model(*data(step))
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def engine_run(stage: int, offload: str, steps: int, rank: int = 0, world: int = 1):
    model = Branchy()
    never = model.never.weight.detach().clone()
    cfg = config(stage=stage, offload=offload, world=world, lr=0.05)
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    losses = []
    for step in range(steps):
        loss = engine(*data(step, rank, world))
        engine.backward(loss)
        engine.step()
        value = loss.detach().reshape(1).clone()
        if world > 1:
            torch.distributed.all_reduce(value)
            value /= world
        losses.append(float(value))
    state = engine.full_state_dict()
    engine.close()
    return losses, state, never


@pytest.mark.parametrize("stage,offload", [(1, "none"), (2, "cpu"), (3, "cpu")])
def test_unused_parameters_are_not_stepped(stage, offload):
    ref_losses, ref_state = torch_losses(8)
    losses, state, never = engine_run(stage, offload, 8)
    assert torch.equal(state["never.weight"], never)  # no weight decay on a param never used
    assert max_rel_diff(losses, ref_losses) <= 1e-5
    for name, value in ref_state.items():
        assert torch.allclose(state[name], value, rtol=1e-5, atol=1e-6), name


def _two_ranks(rank: int, world: int) -> list[float]:
    return engine_run(3, "cpu", 8, rank, world)[0]


def test_unused_parameters_on_two_ranks():
    ref_losses, _ = torch_losses(8)
    results = run_ranks(_two_ranks)
    assert results[0] == results[1]
    assert max_rel_diff(results[0], ref_losses) <= 1e-5
