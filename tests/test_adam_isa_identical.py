"""The AVX2 and AVX-512 kernels are bit-identical to the scalar oracle.

Every dtype combination, lengths around the vector widths (tails), unaligned
starts, and a length that splits across threads. Bit-identity (not a
tolerance) is the contract: the kernels do the same float operations in the
same order, compiled without FMA contraction.
"""

from __future__ import annotations

import pytest
import torch

from tiermem import adam

SIMD_ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not adam.simd_supported(isa), reason=f"no {isa}"))
    for isa in ("avx2", "avx512")
]
GRAD_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
OUT_DTYPES = [None, torch.float32, torch.bfloat16, torch.float16]


def run(isa, n, offset, grad_dtype, out_dtype, adamw, weight_decay, seed, threads=0):
    gen = torch.Generator().manual_seed(seed)

    def buf(dtype, scale=1.0, positive=False):
        x = torch.randn(n + offset, generator=gen) * scale
        return (x.abs() if positive else x).to(dtype)[offset:]

    p, m, v = buf(torch.float32), buf(torch.float32, 0.1), buf(torch.float32, 0.01, True)
    g = buf(grad_dtype)
    out = None if out_dtype is None else torch.full((n,), 7.0, dtype=out_dtype)
    flag = adam.adam_step(
        p,
        m,
        v,
        g,
        step=3,
        lr=1e-2,
        weight_decay=weight_decay,
        adamw_mode=adamw,
        inv_loss_scale=0.5,
        clip_coef=0.9,
        param_out=out,
        simd=isa,
        threads=threads,
    )
    return flag, p, m, v, out


def assert_bit_equal(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert torch.equal(
                x.view(torch.int16 if x.element_size() == 2 else torch.int32),
                y.view(torch.int16 if y.element_size() == 2 else torch.int32),
            )
        else:
            assert x == y


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("grad_dtype", GRAD_DTYPES)
@pytest.mark.parametrize("out_dtype", OUT_DTYPES)
def test_tails_and_dtypes_match_scalar(isa, grad_dtype, out_dtype):
    for n in (1, 7, 8, 9, 15, 16, 17, 31, 33, 100):
        for offset in (0, 1):
            for adamw, wd in ((True, 0.0), (True, 0.1), (False, 0.1)):
                args = (n, offset, grad_dtype, out_dtype, adamw, wd, n)
                assert_bit_equal(run(isa, *args), run("scalar", *args))


@pytest.mark.parametrize("isa", SIMD_ISAS)
def test_multithreaded_length_matches_scalar(isa):
    # 200_003 elements: several per-thread chunks, and a ragged end
    args = (200_003, 5, torch.bfloat16, torch.bfloat16, True, 0.01, 11)
    assert_bit_equal(run(isa, *args), run("scalar", *args, threads=1))


def test_zero_length_is_a_no_op():
    empty = torch.empty(0)
    assert adam.adam_step(empty, empty, empty, empty, step=1) is False
