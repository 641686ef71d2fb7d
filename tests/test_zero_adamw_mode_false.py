"""``"type": "AdamW"`` with ``"adam_w_mode": false`` trains as DeepSpeed does: the type wins,
weight decay stays decoupled (torch.optim.AdamW), where it used to be refused."""

from __future__ import annotations

import pytest
import torch

import tiermem
from tiermem.engine.config import ConfigWarning


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _train(step, model, steps=3):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(4, 8, generator=gen)
        step(model(x).square().mean())


@pytest.mark.parametrize("stage", [0, 3])
def test_adamw_with_adam_w_mode_false_follows_torch_adamw(stage):
    hyper = dict(lr=0.05, weight_decay=0.3)
    cfg = {
        "train_micro_batch_size_per_gpu": 4,
        "optimizer": {"type": "AdamW", "params": {**hyper, "adam_w_mode": False}},
        "zero_optimization": {"stage": stage},
    }
    with pytest.warns(ConfigWarning, match="adam_w_mode is false"):
        engine, *_ = tiermem.initialize(model=_model(), config=cfg)

    def engine_step(loss):
        engine.backward(loss)
        engine.step()

    _train(engine_step, engine)
    got = engine.full_state_dict()
    engine.close()

    reference = _model()
    opt = torch.optim.AdamW(reference.parameters(), **hyper)

    def torch_step(loss):
        loss.backward()
        opt.step()
        opt.zero_grad()

    _train(torch_step, reference)
    for name, param in reference.named_parameters():
        torch.testing.assert_close(got[name], param.detach(), rtol=1e-5, atol=1e-6)
    # and it is not Adam with L2 decay, which ends elsewhere
    l2 = _model()
    opt = torch.optim.Adam(l2.parameters(), **hyper)
    _train(torch_step, l2)
    assert not torch.allclose(got["0.weight"], l2[0].weight.detach(), rtol=1e-4, atol=1e-5)
