"""``model_parameters`` that leave out trainable parameters, or hold empty param groups, are
accepted as DeepSpeed accepts them: the optimizer steps only what it was given; the rest
keep their values exactly (they were refused before)."""

from __future__ import annotations

import pytest
import torch

import tiermem

HYPER = dict(lr=0.05, weight_decay=0.1)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _cfg(stage: int) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 4,
        "optimizer": {"type": "AdamW", "params": HYPER},
        "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
    }


def _run(engine, reference, opt, steps=3):
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x = torch.randn(4, 8, generator=gen)
        engine.backward(engine(x).square().mean())
        engine.step()
        reference(x).square().mean().backward()
        opt.step()
        opt.zero_grad()


def _check(engine, reference, initial):
    got = engine.full_state_dict()
    engine.close()
    for name, param in reference.named_parameters():
        torch.testing.assert_close(got[name], param.detach(), rtol=1e-5, atol=1e-6)
    return got, initial


@pytest.mark.parametrize("stage", [0, 3])
def test_parameters_left_out_keep_their_values(stage):
    model = _model()
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    subset = [model[2].weight, model[0].bias]  # 0.weight and 2.bias left out
    engine, *_ = tiermem.initialize(model=model, model_parameters=subset, config=_cfg(stage))
    reference = _model()
    opt = torch.optim.AdamW([reference[2].weight, reference[0].bias], **HYPER)
    _run(engine, reference, opt)
    got, _ = _check(engine, reference, initial)
    assert torch.equal(got["0.weight"], initial["0.weight"])
    assert torch.equal(got["2.bias"], initial["2.bias"])
    assert not torch.equal(got["2.weight"], initial["2.weight"])


@pytest.mark.parametrize("stage", [0, 3])
def test_empty_param_groups_are_accepted(stage):
    model = _model()
    groups = [
        {"params": [p for n, p in model.named_parameters() if n.endswith("weight")]},
        {"params": []},
        {"params": [p for n, p in model.named_parameters() if n.endswith("bias")], "lr": 0.01},
    ]
    engine, *_ = tiermem.initialize(model=model, model_parameters=groups, config=_cfg(stage))
    assert len(engine.optimizer.param_groups) == 3
    reference = _model()
    opt = torch.optim.AdamW(
        [
            {"params": [p for n, p in reference.named_parameters() if n.endswith("weight")]},
            {"params": []},
            {
                "params": [p for n, p in reference.named_parameters() if n.endswith("bias")],
                "lr": 0.01,
            },
        ],
        **HYPER,
    )
    _run(engine, reference, opt)
    _check(engine, reference, None)


def test_a_tensor_the_model_does_not_hold_is_refused():
    with pytest.raises(ValueError, match="parameter of the model"):
        tiermem.initialize(
            model=_model(), model_parameters=[torch.nn.Parameter(torch.ones(2))], config=_cfg(0)
        )


@pytest.mark.parametrize("stage", [0, 3])
def test_clipping_norm_counts_only_the_stepped_parameters(stage):
    """DeepSpeed clips over the optimizer's parameters: those left out do not count."""
    model = _model()
    cfg = {**_cfg(stage), "gradient_clipping": 0.01}
    engine, *_ = tiermem.initialize(
        model=model, model_parameters=[model[2].weight, model[0].bias], config=cfg
    )
    reference = _model()
    stepped = [reference[2].weight, reference[0].bias]
    opt = torch.optim.AdamW(stepped, **HYPER)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        x = torch.randn(4, 8, generator=gen)
        engine.backward(engine(x).square().mean())
        engine.step()
        reference(x).square().mean().backward()
        expected_norm = torch.nn.utils.clip_grad_norm_(stepped, 0.01)
        assert engine.get_global_grad_norm() == pytest.approx(expected_norm.item(), rel=1e-5)
        opt.step()
        opt.zero_grad()
    _check(engine, reference, None)
