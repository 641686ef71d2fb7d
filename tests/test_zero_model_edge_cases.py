"""Unusual models train as plain torch does, at every stage and placement.

One model has a tied weight (two modules, one parameter), a whole frozen
module, a module with a frozen bias and a trainable weight, a parameter with
zero elements and a module whose only parameter is empty. Frozen parameters
are never changed (no weight decay either) and everything else follows
``torch.optim.AdamW`` over the trainable parameters. The same through
``tiermem.init_context`` with parameters frozen after the model is built.
A parameter added after ``initialize`` is refused by name at the next
forward or optimizer step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from zero_helpers import max_rel_diff

import tiermem

STEPS = 4
LR = 0.05
PLACEMENTS = [  # (stage, offload_optimizer, offload_param)
    (0, "none", "none"),
    (1, "cpu", "none"),
    (2, "none", "none"),
    (2, "cpu", "none"),
    (3, "none", "none"),
    (3, "cpu", "cpu"),
    (3, "nvme", "nvme"),
]


class Nothing(nn.Module):
    """A module whose only parameter has zero elements."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(0, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight.sum()


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(8, 8)
        self.b = nn.Linear(8, 8)
        self.b.weight = self.a.weight  # tied: b uses a's weight, has its own bias
        self.frozen = nn.Linear(8, 8)
        self.part = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)
        self.empty = nn.Parameter(torch.zeros(0))
        self.nothing = Nothing()

    def freeze(self) -> None:
        self.frozen.requires_grad_(False)
        self.part.bias.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.a(x))
        h = torch.tanh(self.b(h)) + torch.tanh(self.frozen(h))
        h = self.nothing(torch.tanh(self.part(h)) + self.empty.sum())
        return F.cross_entropy(self.head(h), y)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return torch.randn(8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)


def torch_run() -> tuple[list[float], dict[str, torch.Tensor]]:
    model = Odd()
    model.freeze()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=LR, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    losses = []
    for step in range(STEPS):
        loss = model(*batch(step))
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses, {k: v.detach().clone() for k, v in model.named_parameters()}


def cfg(stage: int, opt_dev: str, param_dev: str, nvme: str) -> dict:
    def offload(device: str) -> dict:
        return {"device": device, "nvme_path": nvme} if device == "nvme" else {"device": device}

    return {
        "train_micro_batch_size_per_gpu": 8,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": LR, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.1},
        },
        "zero_optimization": {
            "stage": stage,
            "offload_optimizer": offload(opt_dev),
            "offload_param": offload(param_dev),
            "stage3_param_persistence_threshold": 0,
        },
    }


def engine_run(config: dict, *, built_in_context: bool):
    if built_in_context:
        with tiermem.init_context(config=config):
            model = Odd()
    else:
        model = Odd()
    model.freeze()  # after construction, as one freezes a pretrained model
    engine, *_ = tiermem.initialize(model=model, config=config)
    initial = engine.full_state_dict()
    losses = []
    for step in range(STEPS):
        loss = engine(*batch(step))
        losses.append(float(loss.detach()))
        engine.backward(loss)
        engine.step()
    final = engine.full_state_dict()
    engine.close()
    return losses, initial, final


@pytest.fixture(scope="module")
def reference():
    return torch_run()


@pytest.mark.parametrize("stage,opt_dev,param_dev", PLACEMENTS)
def test_tied_frozen_and_empty_parameters_train_like_torch(
    reference, tmp_path, stage, opt_dev, param_dev
):
    ref_losses, ref_state = reference
    losses, initial, final = engine_run(
        cfg(stage, opt_dev, param_dev, str(tmp_path)), built_in_context=False
    )
    for name in ("frozen.weight", "frozen.bias", "part.bias"):
        assert torch.equal(final[name], initial[name]), f"{name} changed"
    assert not torch.equal(final["part.weight"], initial["part.weight"])  # trained
    assert final["empty"].shape == (0,) and final["nothing.weight"].shape == (0, 3)
    assert max_rel_diff(losses, ref_losses) <= 1e-5
    for name, value in ref_state.items():
        assert torch.allclose(final[name], value, rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("stage,opt_dev,param_dev", [(3, "cpu", "cpu"), (3, "nvme", "nvme")])
def test_parameters_frozen_after_init_context_train_like_torch(
    reference, tmp_path, stage, opt_dev, param_dev
):
    ref_losses, ref_state = reference
    losses, initial, final = engine_run(
        cfg(stage, opt_dev, param_dev, str(tmp_path)), built_in_context=True
    )
    for name in ("frozen.weight", "frozen.bias", "part.bias"):
        assert torch.equal(final[name], initial[name]), f"{name} changed"
    assert max_rel_diff(losses, ref_losses) <= 1e-5
    for name, value in ref_state.items():
        assert torch.allclose(final[name], value, rtol=1e-4, atol=1e-6), name


def test_filtered_parameter_iterator_reaches_an_optimizer_callable():
    model = Odd()
    model.freeze()
    seen = []

    def make_optimizer(params):
        params = list(params)
        seen.append(len(params))
        return torch.optim.AdamW(params, lr=LR)

    config = cfg(1, "none", "none", "")
    del config["optimizer"]
    engine, *_ = tiermem.initialize(
        model=model,
        optimizer=make_optimizer,
        model_parameters=filter(lambda p: p.requires_grad, model.parameters()),
        config=config,
    )
    engine.close()
    assert seen == [sum(1 for p in model.parameters() if p.requires_grad)]


@pytest.mark.parametrize("stage", [0, 3])
@pytest.mark.parametrize("where", ["forward", "step"])
def test_parameter_added_after_initialize_is_refused_by_name(stage, where):
    model = Odd()
    engine, optimizer, *_ = tiermem.initialize(model=model, config=cfg(stage, "none", "none", ""))
    loss = engine(*batch(0))
    engine.backward(loss)
    model.head.register_parameter("late", nn.Parameter(torch.ones(3)))
    with pytest.raises(RuntimeError, match=r"'head\.late' was added .* after tiermem.initialize"):
        if where == "forward":
            engine(*batch(1))
        else:
            optimizer.step()
    engine.close()


def test_replaced_parameter_is_refused_by_name():
    model = Odd()
    engine, *_ = tiermem.initialize(model=model, config=cfg(2, "none", "none", ""))
    model.head.weight = nn.Parameter(torch.zeros(4, 8))
    with pytest.raises(RuntimeError, match=r"'head\.weight' was added"):
        engine(*batch(0))
    engine.close()
