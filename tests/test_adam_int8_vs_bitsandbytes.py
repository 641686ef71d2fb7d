"""int8 states against bitsandbytes' own 8-bit AdamW on CPU, where it is installed
(it is not a tiermem dependency): the same dynamic maps to within one float
rounding, and after 20 steps nearly the same codes and parameters."""

from __future__ import annotations

import pytest
import torch

import tiermem
from tiermem import adam

bnb = pytest.importorskip("bitsandbytes")


def test_int8_adamw_follows_bitsandbytes():
    torch.manual_seed(0)
    n = 8192
    init = torch.randn(n)
    ours_p = torch.nn.Parameter(init.clone())
    theirs_p = torch.nn.Parameter(init.clone())
    ours = tiermem.CPUAdam(
        [ours_p], lr=1e-2, weight_decay=0.01, state_dtype="int8", quant_block=256
    )
    theirs = bnb.optim.AdamW8bit([theirs_p], lr=1e-2, weight_decay=0.01, min_8bit_size=0)
    for step in range(20):
        g = torch.randn(n) * (1 + step % 3)
        ours_p.grad, theirs_p.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    state = theirs.state[theirs_p]
    if state["absmax1"].numel() != n // 256:
        pytest.skip(f"this bitsandbytes uses another block size ({n // state['absmax1'].numel()})")
    for key, signed in (("qmap1", True), ("qmap2", False)):
        values, _ = adam.quant_map(signed)
        assert torch.allclose(state[key], values, rtol=0, atol=1e-7)
    same = (state["state1"] == ours.state[ours_p]["exp_avg"]).float().mean().item()
    assert same > 0.98
    moved = (theirs_p.detach() - init).abs().max()
    assert (ours_p.detach() - theirs_p.detach()).abs().max() < 0.05 * moved
