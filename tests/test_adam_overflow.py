"""inf/NaN gradients are reported; with skip_on_overflow nothing is written.

"Nothing" is checked bit for bit on params, both moments and the
low-precision copy, with the bad element first, last, or in another thread's
chunk, for every gradient dtype and ISA.
"""

from __future__ import annotations

import pytest
import torch

from tiermem import adam

ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not adam.simd_supported(isa), reason=f"no {isa}"))
    for isa in ("scalar", "avx2", "avx512")
]
N = 100_001  # long enough to be split across threads


def buffers(grad_dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p, m, g = (torch.randn(N, generator=gen) for _ in range(3))
    v = torch.rand(N, generator=gen)
    out = torch.zeros(N, dtype=torch.bfloat16)
    return p, m, v, g.to(grad_dtype), out


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("where", [0, N // 2 + 17, N - 1])
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_skip_leaves_everything_untouched(isa, grad_dtype, where, bad):
    p, m, v, g, out = buffers(grad_dtype)
    g[where] = bad
    before = [t.clone() for t in (p, m, v, out)]
    found = adam.adam_step(
        p,
        m,
        v,
        g,
        step=2,
        lr=1e-2,
        weight_decay=0.1,
        param_out=out,
        skip_on_overflow=True,
        simd=isa,
    )
    assert found is True
    for t, b in zip((p, m, v, out), before, strict=True):
        assert torch.equal(
            t.view(torch.int16 if t.element_size() == 2 else torch.int32),
            b.view(torch.int16 if b.element_size() == 2 else torch.int32),
        )


@pytest.mark.parametrize("isa", ISAS)
def test_without_skip_the_step_runs_and_reports(isa):
    p, m, v, g, out = buffers(torch.bfloat16)
    g[123] = float("nan")
    ref = [t.clone() for t in (p, m, v, g)]
    ref[3][123] = 0.0
    found = adam.adam_step(p, m, v, g, step=2, param_out=out, simd=isa)
    assert found is True
    assert torch.isnan(p[123]) and torch.isnan(m[123]) and torch.isnan(out[123])
    # every other element got the normal update
    adam.adam_step(*ref, step=2, simd=isa)
    keep = torch.ones(N, dtype=torch.bool)
    keep[123] = False
    assert torch.equal(p[keep], ref[0][keep]) and torch.equal(v[keep], ref[2][keep])


@pytest.mark.parametrize("isa", ISAS)
def test_clean_gradient_reports_no_overflow_and_skip_costs_nothing(isa):
    a, b = buffers(torch.float16), buffers(torch.float16)
    assert adam.adam_step(*a[:4], step=1, param_out=a[4], skip_on_overflow=True, simd=isa) is False
    assert adam.adam_step(*b[:4], step=1, param_out=b[4], simd=isa) is False
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("isa", ISAS)
def test_overflow_created_by_scaling_is_caught(isa):
    """A finite fp32 gradient that the (inverse) loss scale pushes past fp32 range."""
    p, m, v, g, _ = buffers(torch.float32)
    g[7] = 3e38
    before = p.clone()
    assert adam.adam_step(p, m, v, g, step=1, inv_loss_scale=4.0, skip_on_overflow=True, simd=isa)
    assert torch.equal(p, before)
    g[7] = 1e38  # 4e38 overflows, but 1e38 * 0.5 * 4.0 = 2e38 does not
    assert not adam.adam_step(p, m, v, g, step=1, inv_loss_scale=4.0, clip_coef=0.5, simd=isa)
