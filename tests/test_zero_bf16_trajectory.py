"""bf16: parameters and compute in bf16, fp32 masters, against plain PyTorch.

Two references. The mixed-precision recipe in plain torch (bf16 model, fp32
AdamW masters, fp32 gradient accumulation) does the same arithmetic as the
engine: with the optimizer on a CUDA device (torch's AdamW) the losses are
identical; with the CPU Adam kernel (rounding differently from torch's in
the last fp32 bit, which can flip a bf16 rounding) they stay within 1e-3.
On a CPU-only machine the kernel also runs for ``offload_optimizer: none``
(the states are in host memory either way).
Against torch autocast (fp32 parameters, bf16 matmuls, fp32 layer norm and
no rounding of the weights between steps) the trajectory stays within 1e-2.
"""

from __future__ import annotations

import pytest
import torch
from zero_helpers import (
    STEPS,
    Reference,
    config,
    engine_losses,
    make_batches,
    make_model,
    max_rel_diff,
    reference_losses,
)

CASES = [(1, "none"), (2, "cpu"), (3, "none"), (3, "cpu")]


def autocast_losses() -> list[float]:
    model = make_model()
    opt = torch.optim.AdamW(
        model.parameters(), lr=Reference().lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1
    )
    losses = []
    for idx, tgt in make_batches(STEPS):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(idx, tgt)
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses


@pytest.fixture(scope="module")
def references():
    return reference_losses(Reference(dtype=torch.bfloat16)), autocast_losses()


@pytest.mark.parametrize("stage,offload", CASES, ids=[f"stage{s}-{o}" for s, o in CASES])
def test_twenty_bf16_steps_match_torch(references, stage, offload):
    mixed, autocast = references
    losses = engine_losses(config(stage=stage, offload=offload, precision="bf16"))
    torch_adam = offload == "none" and torch.cuda.is_available()
    tolerance = 0.0 if torch_adam else 1e-3
    assert max_rel_diff(losses, mixed) <= tolerance
    assert max_rel_diff(losses, autocast) <= 1e-2
