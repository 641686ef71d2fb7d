"""The bf16 / fp16 parameter copy is bit-equal to torch's ``.to(dtype)`` cast.

lr = 0 leaves the fp32 parameters exactly as they were (p - 0 * update), so
arbitrary bit patterns can be pushed through the conversion: round-to-even
ties, subnormals, values that overflow to inf, inf itself. A real update is
checked too. NaN only has to stay NaN (torch's own NaN bits differ between
its scalar and vector casts).
"""

from __future__ import annotations

import pytest
import torch

from tiermem import adam

ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not adam.simd_supported(isa), reason=f"no {isa}"))
    for isa in ("scalar", "avx2", "avx512")
]


def special_values() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    bits = torch.randint(-(2**31), 2**31 - 1, (20_000,), generator=gen, dtype=torch.int64)
    bits = bits.to(torch.int32)
    # ties for bf16 (low 16 bits 0x8000) and for fp16 (low 13 bits 0x1000), both parities
    ties_bf16 = (bits & ~0xFFFF) | 0x8000
    ties_f16 = (
        torch.randint(0x33000000, 0x47800000, (4000,), generator=gen).to(torch.int32) & ~0x1FFF
    ) | 0x1000
    # fp32 subnormals, and values near the fp16 subnormal / overflow thresholds
    subnormal = torch.randint(1, 0x800000, (2000,), generator=gen).to(torch.int32)
    vals = torch.cat([bits, ties_bf16, ties_f16, subnormal]).view(torch.float32)
    edges = torch.tensor(
        [
            0.0,
            -0.0,
            float("inf"),
            float("-inf"),
            65504.0,
            65519.99,
            65520.0,
            3.3895314e38,
            2.0**-24,
            2.0**-25,
            1.5 * 2.0**-25,
            2.0**-14,
            1e-40,
        ]
    )
    vals = torch.cat([vals, edges, -edges])
    return vals[~torch.isnan(vals)]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_copy_of_arbitrary_values_is_bit_equal_to_torch_cast(isa, out_dtype):
    p = special_values()
    n = p.numel()
    zeros = torch.zeros(n)
    out = torch.empty(n, dtype=out_dtype)
    expect = p.to(out_dtype)
    adam.adam_step(
        p, zeros.clone(), zeros.clone(), zeros.clone(), step=1, lr=0.0, param_out=out, simd=isa
    )
    assert torch.equal(p, special_values())  # lr = 0 really left p alone
    assert torch.equal(out.view(torch.int16), expect.view(torch.int16))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_copy_after_a_real_update_equals_cast_of_new_params(isa, out_dtype):
    gen = torch.Generator().manual_seed(1)
    n = 5003
    p, m, g = (torch.randn(n, generator=gen) for _ in range(3))
    v = torch.rand(n, generator=gen)
    out = torch.empty(n, dtype=out_dtype)
    adam.adam_step(
        p, m, v, g.to(torch.bfloat16), step=5, lr=0.01, weight_decay=0.1, param_out=out, simd=isa
    )
    assert torch.equal(
        out.view(torch.int16 if out.element_size() == 2 else torch.int32),
        p.to(out_dtype).view(torch.int16 if out.element_size() == 2 else torch.int32),
    )


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16])
def test_nan_stays_nan(isa, out_dtype):
    p = torch.tensor([float("nan"), -float("nan"), 1.0] * 7)
    zeros = torch.zeros(p.numel())
    out = torch.empty(p.numel(), dtype=out_dtype)
    adam.adam_step(
        p, zeros.clone(), zeros.clone(), zeros.clone(), step=1, lr=0.0, param_out=out, simd=isa
    )
    assert torch.equal(torch.isnan(out), torch.isnan(p))
