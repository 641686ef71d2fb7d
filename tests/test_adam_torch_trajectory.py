"""CPUAdam follows torch.optim.AdamW / Adam for 100 steps, on every ISA.

Params of mixed sizes, weight decay, a fresh random gradient each step. Two
checks:

* element-wise, |ours - torch| <= STEPS * ulp32(|p| + STEPS * lr): each
  implementation rounds each parameter about once (half an ulp) per step, at
  a magnitude of at most |p| + STEPS * lr (a step moves p by about lr), so two
  correct fp32 trajectories drift apart by at most about that much;
* accuracy no worse than torch's against a float64 run of the same
  algorithm. (For AdamW ours is several times closer: torch multiplies by
  1 - lr*wd rounded to fp32, a systematic error of up to 6e-8 * |p| a step.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiermem import adam

ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not adam.simd_supported(isa), reason=f"no {isa}"))
    for isa in ("scalar", "avx2", "avx512")
]
SIZES = (1, 17, 1000, 40_001)
STEPS = 100


def within_rounding(ours: torch.Tensor, theirs: torch.Tensor, steps: int, lr: float) -> bool:
    largest = (theirs.abs() + steps * lr).float().numpy()
    ulp = torch.from_numpy(np.spacing(largest)).double()
    return bool(((ours - theirs).abs() <= steps * ulp).all())


def make_params(dtype):
    gen = torch.Generator().manual_seed(42)
    return [torch.nn.Parameter(torch.randn(n, generator=gen).to(dtype)) for n in SIZES]


def run(opt_factory, dtype, grads):
    params = make_params(dtype)
    opt = opt_factory(params)
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.to(dtype)
        opt.step()
    return [p.detach().double() for p in params]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("adamw", [True, False], ids=["adamw", "adam_l2"])
def test_hundred_steps_track_torch(isa, adamw):
    gen = torch.Generator().manual_seed(7)
    grads = [[torch.randn(n, generator=gen) for n in SIZES] for _ in range(STEPS)]
    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    torch_cls = torch.optim.AdamW if adamw else torch.optim.Adam

    ours = run(lambda ps: adam.CPUAdam(ps, adamw_mode=adamw, simd=isa, **kw), torch.float32, grads)
    theirs = run(lambda ps: torch_cls(ps, foreach=False, **kw), torch.float32, grads)
    exact = run(lambda ps: torch_cls(ps, foreach=False, **kw), torch.float64, grads)

    for o, t, e in zip(ours, theirs, exact, strict=True):
        assert within_rounding(o, t, STEPS, 1e-3)
        err_ours = (o - e).abs().max().item()
        err_torch = (t - e).abs().max().item()
        assert err_ours <= 1.5 * err_torch + 1e-7, (err_ours, err_torch)


def test_trajectory_check_is_sensitive():
    """A CPUAdam with beta2 off by 1e-4 fails the closeness check."""
    gen = torch.Generator().manual_seed(7)
    grads = [[torch.randn(n, generator=gen) for n in SIZES] for _ in range(20)]
    ours = run(lambda ps: adam.CPUAdam(ps, betas=(0.9, 0.9991)), torch.float32, grads)
    theirs = run(
        lambda ps: torch.optim.AdamW(ps, weight_decay=0.0, foreach=False), torch.float32, grads
    )
    assert not all(within_rounding(o, t, STEPS, 1e-3) for o, t in zip(ours, theirs, strict=True))
