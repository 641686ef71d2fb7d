"""NVMe offload through the tiered store: same trajectory as plain PyTorch, bytes really on disk.

The store's host budget is sized from the buffer counts; with one buffer
and 1000-element optimizer sub-groups cut through the parameters
(``sub_group_split_params``) it holds a fraction of the tiny model, so every
step reads and writes the swap files.
"""

from __future__ import annotations

import os

import pytest
import torch
from zero_helpers import Reference, config, engine_losses, max_rel_diff, reference_losses

CASES = [("nvme", "nvme", "fp32"), ("cpu", "nvme", "fp32"), ("nvme", "cpu", "fp32")]
CASES += [("nvme", "nvme", "bf16")]


def nvme_config(path, *, param: str, optimizer: str, precision: str) -> dict:
    def section(device):
        out = {"device": device, "buffer_count": 1}
        if device == "nvme":
            out["nvme_path"] = str(path)
        return out

    return config(
        stage=3,
        precision=precision,
        extra={
            "zero_optimization": {
                "sub_group_size": 1000,
                "sub_group_split_params": True,
                "offload_param": section(param),
                "offload_optimizer": section(optimizer),
            }
        },
    )


@pytest.mark.parametrize("param,optimizer,precision", CASES, ids=["-".join(c) for c in CASES])
def test_nvme_offload_matches_torch(tmp_path, param, optimizer, precision):
    cfg = nvme_config(tmp_path, param=param, optimizer=optimizer, precision=precision)
    telemetry = []

    names = set()

    def after_step(engine, step):
        telemetry.append(engine.placements.stores[0].telemetry.snapshot())
        names.update(engine.placements.stores[0].names())

    losses = engine_losses(cfg, after_step=after_step)
    if precision == "fp32":
        assert max_rel_diff(losses, reference_losses()) <= 1e-5
    else:
        assert max_rel_diff(losses, reference_losses(Reference(dtype=torch.bfloat16))) <= 1e-3
    kinds = {name.split(".")[0] for name in names}
    expected = {"param"} if param == "nvme" else set()
    expected |= {"adam", "grad"} if optimizer == "nvme" else set()
    assert kinds == expected  # states, gradients and shards all live in the store
    last = telemetry[-1]
    assert last["write_backs"] > 0  # updated states and shards went back to disk
    assert last["prefetch_hits"] > 0  # the recorded schedule was replayed as prefetches
    # the scratch swap files are gone after close()
    leftovers = [f for _, _, files in os.walk(tmp_path) for f in files]
    assert leftovers == []
