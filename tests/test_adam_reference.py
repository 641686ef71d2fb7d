"""One fused step agrees with a float64 reference, element by element, on every ISA.

Inputs are fp32; the reference recomputes the step in float64 from the very
same fp32 inputs with the exact (double) hyperparameters. Error measure
(stated because a plain relative error is meaningless where terms cancel):

* exp_avg: |m32 - m64| / (beta1*|m0| + (1-beta1)*|g_eff|) <= 1e-6,
* exp_avg_sq: |v32 - v64| / (beta2*v0 + (1-beta2)*g_eff**2) <= 1e-6,
* param: (|p32 - p64| - ulp32(p64)/2) / (step_size * m_scale / denom64 + lr*wd*|p0|)
  <= 1e-6, i.e. relative to the size of the update (Adam part plus AdamW's
  decay), after allowing the half ulp that storing the parameter in fp32 must
  cost,

where |g_eff| = |g * scale| + l2 * |p| bounds the effective gradient.
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
BOUND = 1e-6


def reference_step(p, m, v, g, *, step, lr, betas, eps, wd, adamw, scale):
    """Adam/AdamW in float64 (numpy), following torch's single-tensor formulas."""
    p, m, v, g = (np.asarray(x, dtype=np.float64) for x in (p, m, v, g))
    b1, b2 = betas
    g = g * scale
    if not adamw:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    step_size = lr / (1 - b1**step)
    denom = np.sqrt(v) / np.sqrt(1 - b2**step) + eps
    if adamw:
        p = p * (1 - lr * wd)
    return p - step_size * m / denom, m, v, step_size, denom


def worst_errors(n, isa, grad_dtype, adamw, step, scale, offset, seed):
    rng = np.random.default_rng(seed)

    # [Note: an offset slice of a larger buffer makes the arrays unaligned for SIMD.]
    def f32(x):
        buf = torch.zeros(n + offset, dtype=torch.float32)
        buf[offset:] = torch.from_numpy(x.astype(np.float32))
        return buf[offset:]

    p = f32(rng.standard_normal(n))
    m = f32(rng.standard_normal(n) * 0.1)
    v = f32(rng.random(n) * 0.01)
    graw = torch.from_numpy(rng.standard_normal(n).astype(np.float32) / scale).to(grad_dtype)
    kw = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, wd=0.05, adamw=adamw, step=step, scale=scale)
    inputs = [t.clone().double().numpy() for t in (p, m, v, graw)]
    p64, m64, v64, step_size, denom = reference_step(*inputs, **kw)
    overflow = adam.adam_step(
        p,
        m,
        v,
        graw,
        step=step,
        lr=kw["lr"],
        betas=kw["betas"],
        eps=kw["eps"],
        weight_decay=kw["wd"],
        adamw_mode=adamw,
        inv_loss_scale=scale,
        simd=isa,
    )
    assert not overflow
    p0, m0, v0, g0 = inputs
    g_eff = np.abs(g0 * scale) + (0.0 if adamw else kw["wd"] * np.abs(p0))
    m_scale = 0.9 * np.abs(m0) + 0.1 * g_eff
    v_scale = 0.999 * v0 + 0.001 * g_eff**2
    half_ulp = np.spacing(np.abs(p64).astype(np.float32)).astype(np.float64) / 2
    update_scale = step_size * m_scale / denom + (kw["lr"] * kw["wd"] * np.abs(p0) if adamw else 0)
    p_err = (np.abs(p.double().numpy() - p64) - half_ulp) / update_scale
    return (
        np.max(np.abs(m.double().numpy() - m64) / m_scale),
        np.max(np.abs(v.double().numpy() - v64) / v_scale),
        np.max(p_err),
    )


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("adamw", [True, False], ids=["adamw", "adam_l2"])
def test_one_step_matches_float64(isa, grad_dtype, adamw):
    # 4099 elements: SIMD bodies plus a ragged tail; offset 3 breaks alignment
    for step, scale, offset in ((1, 1.0, 0), (7, 1 / 1024, 3)):
        errs = worst_errors(4099, isa, grad_dtype, adamw, step, scale, offset, seed=step)
        assert max(errs) <= BOUND, f"step {step}: m, v, p relative errors {errs}"


def test_error_measure_catches_a_wrong_update():
    """The measure is sharp enough: a step with eps off by 1% (or lr off by 1e-5) fails it."""
    rng = np.random.default_rng(0)
    p, m, v, g = (rng.standard_normal(1000) for _ in range(4))
    v = np.abs(v) * 1e-6
    kw = dict(step=3, lr=1e-3, betas=(0.9, 0.999), wd=0.0, adamw=True, scale=1.0)
    good, *_, step_size, denom = reference_step(p, m, v, g, eps=1e-8, **kw)
    bad = reference_step(p, m, v, g, eps=1e-8, **{**kw, "lr": 1e-3 * (1 + 1e-5)})[0]
    m_scale = 0.9 * np.abs(m) + 0.1 * np.abs(g)
    assert np.max(np.abs(bad - good) / (step_size * m_scale / denom)) > BOUND
