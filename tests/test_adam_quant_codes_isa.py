"""The vector quantizers (a guess from the value's decade and linear bin, settled
by one midpoint comparison on each side) give exactly the scalar binary search's
codes: on every midpoint and its float neighbours, across every decade, at the
edges (0, +-1, just above 1) and for NaN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiermem import adam

SIMD_ISAS = [
    pytest.param(isa, marks=pytest.mark.skipif(not adam.simd_supported(isa), reason=f"no {isa}"))
    for isa in ("avx2", "avx512")
]


def probes(signed: bool) -> torch.Tensor:
    _, mids = adam.quant_map(signed)
    mids = mids.numpy()[:255]
    near = [mids]
    up = down = mids
    for _ in range(3):  # float neighbours of every midpoint
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        near += [up, down]
    gen = np.random.default_rng(0)
    decades = (10.0 ** gen.uniform(-9, 0.01, 200_000)).astype(np.float32)
    sweep = np.linspace(0, 1.01, 300_001, dtype=np.float32)
    edges = np.array([0.0, -0.0, 1.0, 1.0000001, 1.01, 1e-7, 1e-6, 0.1, 0.01], dtype=np.float32)
    bounds = np.array([10.0**-k for k in range(1, 8)], dtype=np.float32)
    for _ in range(3):
        bounds = np.concatenate([bounds, np.nextafter(bounds, 1), np.nextafter(bounds, 0)])
    pos = np.concatenate([*near, decades, sweep, edges, bounds]).astype(np.float32)
    values = np.concatenate([pos, -pos]) if signed else np.abs(pos)
    return torch.from_numpy(np.concatenate([values, np.array([np.nan], dtype=np.float32)]))


@pytest.mark.parametrize("isa", SIMD_ISAS)
@pytest.mark.parametrize("signed", [True, False])
def test_vector_codes_equal_binary_search(isa, signed):
    x = probes(signed)
    want = adam.quant_codes(x, signed, simd="scalar")
    got = adam.quant_codes(x, signed, simd=isa)
    bad = (got != want).nonzero().reshape(-1)
    assert bad.numel() == 0, [(x[i].item(), got[i].item(), want[i].item()) for i in bad[:5]]
    assert want[-1].item() == 0  # NaN
