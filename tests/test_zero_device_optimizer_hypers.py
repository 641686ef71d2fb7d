"""The device (torch AdamW) shard optimizer steps each shard with its own param group's
hyperparameters when whole shards belong to different param groups (one module at a lower
lr, say), and refuses a shard split between groups with different hyperparameters."""

from __future__ import annotations

import pytest
import torch

from tiermem.engine.optimizer_step import AdamHyper, DeviceShardOptimizer, StepItem


def _hyper(lr: float, weight_decay: float) -> AdamHyper:
    return AdamHyper(
        lr=lr,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=weight_decay,
        adamw_mode=True,
        bias_correction=True,
    )


def _item(key: int, grad: torch.Tensor, out: torch.Tensor, segments) -> StepItem:
    return StepItem(key, lambda: grad, lambda: None, lambda: out, lambda: None, 1, segments)


def test_whole_shards_of_different_param_groups_get_their_own_hyperparameters():
    torch.manual_seed(0)
    masters = [torch.randn(8), torch.randn(5)]
    grads = [torch.randn(8), torch.randn(5)]
    hypers = [_hyper(1e-2, 0.1), _hyper(1e-4, 0.0)]
    opt = DeviceShardOptimizer(torch.device("cpu"))
    for key, master in enumerate(masters):
        opt.add(key, master)
    outs = [torch.empty_like(m) for m in masters]
    items = [
        _item(key, grads[key], outs[key], ((0, masters[key].numel(), hypers[key]),))
        for key in range(2)
    ]
    opt.step(items, hypers[0], grad_scale=1.0)

    ref = [m.clone().requires_grad_(True) for m in masters]
    torch_opt = torch.optim.AdamW(
        [
            {"params": [ref[k]], "lr": hypers[k].lr, "weight_decay": hypers[k].weight_decay}
            for k in range(2)
        ]
    )
    for r, g in zip(ref, grads, strict=True):
        r.grad = g.clone()
    torch_opt.step()
    for key in range(2):
        assert torch.equal(opt.state(key)["master"], ref[key].detach()), key
        assert torch.equal(outs[key], ref[key].detach()), key


def test_a_shard_split_between_different_hyperparameters_is_refused():
    opt = DeviceShardOptimizer(torch.device("cpu"))
    opt.add(0, torch.zeros(4))
    segments = ((0, 2, _hyper(1e-2, 0.1)), (2, 4, _hyper(1e-2, 0.0)))
    item = _item(0, torch.ones(4), torch.empty(4), segments)
    with pytest.raises(NotImplementedError, match="CPU Adam"):
        opt.step([item], _hyper(1e-2, 0.1), grad_scale=1.0)
