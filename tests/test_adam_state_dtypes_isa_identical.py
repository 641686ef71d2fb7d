"""bf16 and int8 moments: the AVX2 and AVX-512 kernels are bit-identical to
the scalar oracle (moments, scales, parameters, the bf16 copy, the overflow
flag), for tails around the vector widths and the quantization blocks,
every gradient/output dtype, both decay modes, and a multi-threaded length."""

from __future__ import annotations

import pytest
import torch

from tiermem import adam

SIMD_ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not adam.simd_supported(isa), reason=f"no {isa}"))
    for isa in ("avx2", "avx512")
]


def make_state(kind, n, block, gen):
    m = torch.randn(n, generator=gen) * 0.1
    v = (torch.randn(n, generator=gen) * 0.01).abs()
    if kind == "bf16":
        return {"exp_avg": m.to(torch.bfloat16), "exp_avg_sq": v.to(torch.bfloat16)}
    codes_m, absmax_m = adam.quantize_blockwise(m, True, block)
    codes_v, absmax_v = adam.quantize_blockwise(v, False, block)
    return {
        "exp_avg": codes_m,
        "exp_avg_sq": codes_v,
        "exp_avg_absmax": absmax_m,
        "exp_avg_sq_absmax": absmax_v,
    }


def run(isa, kind, n, block, grad_dtype, out_dtype, adamw, wd, seed, threads=0, poison=False):
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=gen)
    state = make_state(kind, n, block, gen)
    g = torch.randn(n, generator=gen)
    if poison:
        g[n // 2] = float("inf")
    g = g.to(grad_dtype)
    out = None if out_dtype is None else torch.full((n,), 7.0, dtype=out_dtype)
    flag = adam.adam_step(
        p,
        state["exp_avg"],
        state["exp_avg_sq"],
        g,
        step=3,
        lr=1e-2,
        weight_decay=wd,
        adamw_mode=adamw,
        inv_loss_scale=0.5,
        clip_coef=0.9,
        param_out=out,
        simd=isa,
        threads=threads,
        exp_avg_absmax=state.get("exp_avg_absmax"),
        exp_avg_sq_absmax=state.get("exp_avg_sq_absmax"),
        quant_block=block,
    )
    return [flag, p, out, *state.values()]


def assert_bit_equal(a, b):
    for x, y in zip(a, b, strict=True):
        if isinstance(x, torch.Tensor):
            assert torch.equal(x.view(torch.uint8), y.view(torch.uint8))
        else:
            assert x == y


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("kind", ["bf16", "int8"])
@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("out_dtype", [None, torch.float32, torch.bfloat16, torch.float16])
def test_tails_and_dtypes_match_scalar(isa, kind, grad_dtype, out_dtype):
    for n, block in (
        (1, 256),
        (7, 256),
        (17, 256),
        (255, 256),
        (257, 256),
        (700, 320),
        (2049, 2048),
    ):
        for adamw, wd in ((True, 0.0), (True, 0.1), (False, 0.1)):
            args = (kind, n, block, grad_dtype, out_dtype, adamw, wd, n)
            assert_bit_equal(run(isa, *args), run("scalar", *args))


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("kind", ["bf16", "int8"])
def test_multithreaded_length_matches_single_thread_scalar(isa, kind):
    args = (kind, 300_007, 2048, torch.bfloat16, torch.bfloat16, True, 0.01, 11)
    assert_bit_equal(run(isa, *args), run("scalar", *args, threads=1))


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("kind", ["bf16", "int8"])
def test_overflow_reported_alike(isa, kind):
    args = (kind, 1000, 256, torch.bfloat16, torch.bfloat16, True, 0.0, 5)
    a = run(isa, *args, poison=True)
    assert a[0] is True
    assert_bit_equal(a, run("scalar", *args, poison=True))
