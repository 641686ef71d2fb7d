"""The plain-PyTorch route: loss.backward(), optimizer.step()/zero_grad(), torch schedulers."""

from __future__ import annotations

import pytest
import torch
from zero_helpers import LR, STEPS, config, make_batches, make_model, max_rel_diff

import tiermem


def torch_run(make_optimizer, make_scheduler, model) -> list[float]:
    opt = make_optimizer(model.parameters())
    sched = make_scheduler(opt)
    losses = []
    for idx, tgt in make_batches(STEPS):
        loss = model(idx, tgt)
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return losses


def adamw(params):
    return torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)


def step_lr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)


@pytest.mark.parametrize("stage,offload", [(2, "none"), (3, "cpu")])
def test_user_loop_with_returned_optimizer_and_torch_scheduler(stage, offload):
    reference = torch_run(adamw, step_lr, make_model())
    model = make_model()
    cfg = config(stage=stage, offload=offload)
    engine, optimizer, _, _ = tiermem.initialize(model=model, config=cfg)
    scheduler = step_lr(optimizer)
    losses, lrs = [], []
    for idx, tgt in make_batches(STEPS):
        loss = model(idx, tgt)  # the module itself, not the engine
        losses.append(float(loss.detach()))
        loss.backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is None for g in grads)  # gradients went to the engine's shards
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        lrs.append(engine.get_lr()[0])
    assert lrs[3] == LR and lrs[4] == LR / 2  # the scheduler steers the engine's step
    assert max_rel_diff(losses, reference) <= 1e-5
    engine.close()


def test_client_optimizer_hyperparameters_and_scheduler_are_taken_over():
    reference = torch_run(adamw, step_lr, make_model())
    model = make_model()
    client = adamw(model.parameters())
    scheduler = step_lr(client)  # built on the user's optimizer, before initialize
    cfg = config(stage=3, offload="cpu")
    del cfg["optimizer"]
    engine, optimizer, _, returned_scheduler = tiermem.initialize(
        model=model, optimizer=client, lr_scheduler=scheduler, config=cfg
    )
    assert returned_scheduler is scheduler
    assert optimizer.param_groups is client.param_groups
    losses = []
    for idx, tgt in make_batches(STEPS):
        loss = engine(idx, tgt)
        losses.append(float(loss.detach()))
        engine.backward(loss)
        engine.step()  # steps the scheduler too
    assert engine.get_lr() == [LR / 16]  # 20 steps of StepLR(5, 0.5)
    assert max_rel_diff(losses, reference) <= 1e-5
    engine.close()


def test_other_optimizers_are_refused_with_a_clear_error():
    model = make_model()
    cfg = config(stage=1)
    with pytest.raises(TypeError, match="SGD"):
        tiermem.initialize(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), config=cfg
        )
