"""Optimizer param groups with their own hyperparameters (no weight decay and a lower learning
rate for biases, norms and the embedding) train like plain torch with the same groups, given
as ``model_parameters`` dicts or through the user's torch optimizer."""

from __future__ import annotations

import pytest
import torch
from zero_helpers import LR, STEPS, config, make_batches, make_model, max_rel_diff

import tiermem

DECAY, NO_DECAY_LR = 0.1, LR / 3


def _groups(model: torch.nn.Module) -> list[dict]:
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "wte" not in n]
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    return [
        {"params": decay, "weight_decay": DECAY},
        {"params": rest, "weight_decay": 0.0, "lr": NO_DECAY_LR},
    ]


def _train(step_fn, model_call) -> list[float]:
    losses = []
    for idx, tgt in make_batches(STEPS):
        loss = model_call(idx, tgt)
        losses.append(float(loss.detach()))
        step_fn(loss)
    return losses


@pytest.fixture(scope="module")
def reference() -> list[float]:
    model = make_model()
    opt = torch.optim.AdamW(_groups(model), lr=LR, betas=(0.9, 0.99), eps=1e-8)

    def step(loss):
        loss.backward()
        opt.step()
        opt.zero_grad()

    return _train(step, model)


def _engine_losses(cfg: dict, *, groups: bool = True, client: bool = False) -> list[float]:
    model = make_model()
    kwargs = {}
    if client:
        cfg = {k: v for k, v in cfg.items() if k != "optimizer"}
        kwargs["optimizer"] = torch.optim.AdamW(_groups(model), lr=LR, betas=(0.9, 0.99), eps=1e-8)
    elif groups:
        kwargs["model_parameters"] = _groups(model)
    engine, optimizer, _, _ = tiermem.initialize(model=model, config=cfg, **kwargs)
    if groups or client:
        assert [g["weight_decay"] for g in optimizer.param_groups] == [DECAY, 0.0]
        assert [g["lr"] for g in optimizer.param_groups] == [LR, NO_DECAY_LR]

    def step(loss):
        engine.backward(loss)
        engine.step()

    losses = _train(step, engine)
    engine.close()
    return losses


CASES = [(1, "cpu"), (3, "none"), (3, "nvme")]


@pytest.mark.parametrize("stage,offload", CASES, ids=[f"stage{s}-{o}" for s, o in CASES])
def test_model_parameters_dicts_match_torch(reference, stage, offload, tmp_path):
    cfg = config(stage=stage, offload="none" if offload == "nvme" else offload)
    if offload == "nvme":  # parameters and optimizer states on NVMe, several sub-groups
        nvme = {"device": "nvme", "nvme_path": str(tmp_path)}
        cfg["zero_optimization"].update(
            offload_optimizer=nvme, offload_param=nvme, sub_group_size=1000
        )
    assert max_rel_diff(_engine_losses(cfg), reference) <= 1e-5
    if offload == "none":  # the groups matter: the config's hyperparameters for all differ
        assert max_rel_diff(_engine_losses(cfg, groups=False), reference) > 1e-3


def test_client_optimizer_groups_match_torch(reference):
    assert max_rel_diff(_engine_losses(config(stage=2), client=True), reference) <= 1e-5
