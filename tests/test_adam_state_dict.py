"""CPUAdam is a torch.optim.Optimizer with torch's Adam/AdamW state layout.

State dicts move between CPUAdam and torch.optim.AdamW / Adam both ways and
training continues as if it had never switched; LR schedulers, param groups,
zero_grad and params without gradients behave as in torch.
"""

from __future__ import annotations

import pytest
import torch

from tiermem import adam

SIZES = (3, 64, 1001)


def model_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in SIZES]


def grads_for(step):
    gen = torch.Generator().manual_seed(100 + step)
    return [torch.randn(n, generator=gen) for n in SIZES]


def train(opt, params, steps, first=0):
    for s in range(first, first + steps):
        for p, g in zip(params, grads_for(s), strict=True):
            p.grad = g.clone()
        opt.step()


def test_state_layout_is_torchs():
    ours_p, torch_p = model_params(), model_params()
    ours = adam.CPUAdam(ours_p, lr=1e-2, weight_decay=0.1)
    ref = torch.optim.AdamW(torch_p, lr=1e-2, weight_decay=0.1, foreach=False)
    train(ours, ours_p, 3)
    train(ref, torch_p, 3)
    a, b = ours.state_dict(), ref.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k].keys() == b["state"][k].keys() == {"step", "exp_avg", "exp_avg_sq"}
        assert a["state"][k]["step"].dtype == b["state"][k]["step"].dtype
        assert a["state"][k]["step"].item() == 3.0
    assert set(b["param_groups"][0]) <= set(a["param_groups"][0])


@pytest.mark.parametrize("torch_cls", [torch.optim.AdamW, torch.optim.Adam])
def test_switching_optimizers_mid_run_continues_the_same_trajectory(torch_cls):
    adamw = torch_cls is torch.optim.AdamW
    kw = dict(lr=1e-2, weight_decay=0.1)
    # uninterrupted torch run: the target
    target_p = model_params()
    train(torch_cls(target_p, foreach=False, **kw), target_p, 6)

    # torch for 2 steps -> CPUAdam for 2 -> torch for 2
    params = model_params()
    first = torch_cls(params, foreach=False, **kw)
    train(first, params, 2)
    ours = adam.CPUAdam(params, lr=0.5, adamw_mode=not adamw)  # wrong on purpose
    ours.load_state_dict(first.state_dict())  # the loaded groups win
    train(ours, params, 2, first=2)
    assert ours.state[params[0]]["step"].item() == 4.0
    last = torch_cls(params, foreach=False, lr=0.5)
    last.load_state_dict(ours.state_dict())
    train(last, params, 2, first=4)

    for p, t in zip(params, target_p, strict=True):
        torch.testing.assert_close(p, t, rtol=1e-5, atol=1e-6)


def test_lr_scheduler_changes_the_step():
    a_p, b_p = model_params(), model_params()
    a = adam.CPUAdam(a_p, lr=1e-2)
    b = adam.CPUAdam(b_p, lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(a, step_size=1, gamma=0.1)
    train(a, a_p, 1)
    train(b, b_p, 1)
    sched.step()
    assert a.param_groups[0]["lr"] == pytest.approx(1e-3)
    before = [p.detach().clone() for p in a_p]
    train(a, a_p, 1, first=1)
    train(b, b_p, 1, first=1)
    moved_a = sum((p - q).abs().sum().item() for p, q in zip(a_p, before, strict=True))
    moved_b = sum((p - q).abs().sum().item() for p, q in zip(b_p, before, strict=True))
    assert moved_a == pytest.approx(moved_b / 10, rel=0.05)


def test_groups_zero_grad_and_missing_grads():
    params = model_params()
    opt = adam.CPUAdam(
        [{"params": params[:1], "lr": 0.0}, {"params": params[1:], "weight_decay": 0.5}], lr=1e-2
    )
    before = [p.detach().clone() for p in params]
    params[0].grad = torch.ones(SIZES[0])
    params[1].grad = torch.ones(SIZES[1])  # params[2] has no gradient
    opt.step()
    assert torch.equal(params[0], before[0])  # lr 0 group
    assert not torch.equal(params[1], before[1])
    assert torch.equal(params[2], before[2]) and params[2] not in opt.state
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_closure_and_bf16_gradients():
    p = torch.nn.Parameter(torch.ones(40))
    p.grad_dtype = None  # torch >= 2.10 refuses a gradient of another dtype otherwise
    opt = adam.CPUAdam([p], lr=0.1)

    def closure():
        p.grad = torch.full((40,), 2.0, dtype=torch.bfloat16)
        return 1.5

    assert opt.step(closure) == 1.5
    # first Adam step moves each element by lr (sign of the gradient)
    torch.testing.assert_close(p.detach(), torch.full((40,), 0.9), rtol=0, atol=1e-6)
