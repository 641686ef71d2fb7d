"""Several ``engine.backward()`` calls before one ``engine.step()`` accumulate into one
optimizer step, as in DeepSpeed (its multi-backward test): the step equals torch's on the
summed loss. It used to be refused because the first backward had already stepped."""

from __future__ import annotations

import pytest
import torch

import tiermem

HYPER = dict(lr=0.05, weight_decay=0.1)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _batches(steps: int):
    gen = torch.Generator().manual_seed(3)
    return [
        (torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen)) for _ in range(steps)
    ]


@pytest.mark.parametrize("stage, offload", [(0, "none"), (2, "cpu"), (3, "cpu")])
def test_two_backwards_then_one_step_equal_torch_on_the_summed_loss(stage, offload):
    cfg = {
        "train_micro_batch_size_per_gpu": 4,
        "optimizer": {"type": "AdamW", "params": HYPER},
        "zero_optimization": {
            "stage": stage,
            "offload_optimizer": {"device": offload},
            "stage3_param_persistence_threshold": 0,
        },
    }
    engine, *_ = tiermem.initialize(model=_model(), config=cfg)
    reference = _model()
    opt = torch.optim.AdamW(reference.parameters(), **HYPER)
    for a, b in _batches(4):
        engine.backward(engine(a).square().mean())
        engine.backward(engine(b).abs().mean())
        engine.step()
        (reference(a).square().mean() + reference(b).abs().mean()).backward()
        opt.step()
        opt.zero_grad()
    got = engine.full_state_dict()
    engine.close()
    for name, param in reference.named_parameters():
        torch.testing.assert_close(got[name], param.detach(), rtol=1e-5, atol=1e-6)
