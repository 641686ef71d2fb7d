"""bf16 and int8 moments against a NumPy float64 reference of each algorithm,
element by element, over several steps.

Each step starts the reference from the kernel's own stored state (bf16
moments widened; int8 codes times their block scale), computes Adam in
float64, and then stores the moments the algorithm's way: rounded to bf16, or
quantized per block (absmax scale, nearest entry of the dynamic map). The
kernel computes in fp32, so parameters and scales agree to fp32 rounding and a
stored moment may differ by one step of its grid where the exact value sits on
a rounding boundary."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiermem import adam

HYPER = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)


def paper_map(signed: bool) -> np.ndarray:
    """The dynamic map from the paper's description, written independently:
    exponent e (0..6) of ten, then a linear fraction of [0.1, 1] with
    6 - e (signed) or 7 - e (unsigned) bits, each value its bin's centre;
    plus 0 and 1."""
    vals = [0.0, 1.0]
    for e in range(7):
        n = 2 ** ((6 if signed else 7) - e)
        for j in range(n):
            v = (0.1 + (j + 0.5) * 0.9 / n) / 10.0**e
            vals += [v, -v] if signed else [v]
    return np.sort(np.array(vals, dtype=np.float64)).astype(np.float32)


@pytest.mark.parametrize("signed", [True, False])
def test_maps_follow_the_paper(signed):
    values, mids = adam.quant_map(signed)
    expect = paper_map(signed)
    assert len(np.unique(expect)) == 256
    assert np.array_equal(values.numpy(), expect)
    assert values[0].item() == (-expect[-2] if signed else 0.0)
    assert 1.0 in values.tolist() and 0.0 in values.tolist()
    assert np.array_equal(mids.numpy()[:255], (expect[:-1] + expect[1:]) * np.float32(0.5))


def ref_adam(p, m, v, g, step, wd, adamw):
    """float64 Adam/AdamW from float64 old moments; returns p, m, v."""
    b1, b2 = HYPER["betas"]
    if not adamw:
        g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - b2**step) + HYPER["eps"]
    p = p - HYPER["lr"] / (1 - b1**step) * m / denom - (HYPER["lr"] * wd * p if adamw else 0.0)
    return p, m, v


def grid_step_bf16(x: np.ndarray) -> np.ndarray:
    return np.abs(x) * 2.0**-7 + 1e-38


@pytest.mark.parametrize("adamw,wd", [(True, 0.1), (False, 0.05)])
def test_bf16_moments_match_reference(adamw, wd):
    n = 5000
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(n, generator=gen)
    m = torch.zeros(n, dtype=torch.bfloat16)
    v = torch.zeros(n, dtype=torch.bfloat16)
    for step in range(1, 6):
        g = torch.randn(n, generator=gen)
        p64, m64, v64 = (t.double().numpy() for t in (p, m, v))
        rp, rm, rv = ref_adam(p64, m64, v64, g.double().numpy(), step, wd, adamw)
        adam.adam_step(p, m, v, g, step=step, weight_decay=wd, adamw_mode=adamw, **HYPER)
        np.testing.assert_allclose(p.double().numpy(), rp, rtol=2e-6, atol=1e-7)
        for got, want in ((m, rm), (v, rv)):
            rounded = torch.from_numpy(want).to(torch.bfloat16)
            got64 = got.double().numpy()
            # the same bf16 value, or its neighbour where want sits on a tie
            assert np.all(np.abs(got64 - rounded.double().numpy()) <= grid_step_bf16(want))
            assert (got == rounded).float().mean() > 0.999


def ref_quantize(x, signed, block):
    """Block absmax and nearest-code indices (ties to the lower code) in float64,
    with the map's float32 midpoints."""
    _, mids = adam.quant_map(signed)
    mids = mids.double().numpy()[:255]
    n = x.size
    absmax = np.array([np.abs(x[i : i + block]).max() for i in range(0, n, block)])
    scale = np.repeat(absmax, block)[:n]
    normed = np.where(scale > 0, x / np.where(scale > 0, scale, 1), 0.0)
    return np.searchsorted(mids, normed, side="left"), absmax, normed, mids


@pytest.mark.parametrize("block", [256, 2048])
@pytest.mark.parametrize("adamw,wd", [(True, 0.1), (False, 0.05)])
def test_int8_moments_match_reference(block, adamw, wd):
    n = 3 * block + 77
    gen = torch.Generator().manual_seed(block)
    p = torch.randn(n, generator=gen)
    zeros = torch.zeros(n)
    m, am = adam.quantize_blockwise(zeros, True, block)
    v, av = adam.quantize_blockwise(zeros, False, block)
    maps = {s: adam.quant_map(s)[0].double().numpy() for s in (True, False)}
    for step in range(1, 6):
        g = torch.randn(n, generator=gen) * (1 + step)
        scale_m = np.repeat(am.double().numpy(), block)[:n]
        scale_v = np.repeat(av.double().numpy(), block)[:n]
        m_old = maps[True][m.numpy()] * scale_m
        v_old = maps[False][v.numpy()] * scale_v
        rp, rm, rv = ref_adam(p.double().numpy(), m_old, v_old, g.double().numpy(), step, wd, adamw)
        adam.adam_step(
            p,
            m,
            v,
            g,
            step=step,
            weight_decay=wd,
            adamw_mode=adamw,
            exp_avg_absmax=am,
            exp_avg_sq_absmax=av,
            quant_block=block,
            **HYPER,
        )
        np.testing.assert_allclose(p.double().numpy(), rp, rtol=2e-6, atol=1e-7)
        for codes, absmax, want, signed in ((m, am, rm, True), (v, av, rv, False)):
            ref_codes, ref_absmax, normed, mids = ref_quantize(want, signed, block)
            np.testing.assert_allclose(absmax.double().numpy(), ref_absmax, rtol=1e-6)
            got = codes.numpy().astype(np.int64)
            differ = got != ref_codes
            # a differing code is a neighbour, for a value within fp32 rounding of a midpoint
            assert np.all(np.abs(got[differ] - ref_codes[differ]) == 1)
            lower = np.minimum(got[differ], ref_codes[differ])
            assert np.all(
                np.abs(normed[differ] - mids[lower]) <= 1e-6 * np.abs(normed[differ]) + 1e-12
            )
            assert differ.mean() < 0.01
