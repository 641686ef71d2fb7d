"""grad_sqnorm equals the float64 sum of squares and flags inf/NaN."""

from __future__ import annotations

import math

import pytest
import torch

from tiermem import adam

ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not adam.simd_supported(isa), reason=f"no {isa}"))
    for isa in ("scalar", "avx2", "avx512")
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_matches_float64_sum_of_squares(isa, dtype):
    gen = torch.Generator().manual_seed(0)
    for n, offset in ((1, 0), (15, 1), (33, 3), (1000, 0), (150_001, 1)):
        g = (torch.randn(n + offset, generator=gen) * 3).to(dtype)[offset:]
        expect = g.double().square().sum().item()
        got = adam.grad_sqnorm(g, simd=isa)
        # products of fp32 values are exact in float64; only the sums round
        assert got == pytest.approx(expect, rel=1e-13), (n, offset)


@pytest.mark.parametrize("isa", ISAS)
def test_non_finite_element_makes_the_norm_non_finite(isa):
    g = torch.ones(70_001, dtype=torch.bfloat16)
    assert adam.grad_sqnorm(g, simd=isa) == 70_001
    g[-1] = float("inf")
    assert math.isinf(adam.grad_sqnorm(g, simd=isa))
    g[-1] = float("nan")
    assert math.isnan(adam.grad_sqnorm(g, simd=isa))


def test_result_does_not_depend_on_timing():
    g = torch.randn(300_000)
    first = adam.grad_sqnorm(g, threads=2)
    assert all(adam.grad_sqnorm(g, threads=2) == first for _ in range(5))
    assert adam.grad_sqnorm(torch.empty(0)) == 0.0
