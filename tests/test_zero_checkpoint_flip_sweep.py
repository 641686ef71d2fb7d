"""A flipped bit anywhere in a checkpoint (the safetensors length field, its JSON header,
tensor data, the manifest) is refused naming the damaged file, before anything reaches an
engine whose parameters and Adam states live on NVMe; the pristine checkpoint then loads
exactly. (test_zero_checkpoint_corruption.py covers truncated, missing and edited files.)
"""

from __future__ import annotations

import pytest
import torch
from zero_helpers import make_batches, make_model, nvme_offload_config

import tiermem
from tiermem.engine.checkpoint_format import CheckpointCorruptError


def positions(size: int) -> list[int]:
    """The first 64 bytes (length field, start of the header), then 48 spread over the rest."""
    return sorted({*range(min(64, size)), *(64 + i * (size - 65) // 47 for i in range(48))})


def state(engine) -> tuple[int, dict[str, torch.Tensor]]:
    return engine.global_steps, {k: v.clone() for k, v in engine.full_state_dict().items()}


def test_every_flipped_bit_is_named_and_nothing_is_loaded(tmp_path):
    engine, *_ = tiermem.initialize(model=make_model(), config=nvme_offload_config(tmp_path / "s1"))
    for idx, tgt in make_batches(2):
        engine.backward(engine(idx, tgt))
        engine.step()
    path = engine.save_checkpoint(tmp_path / "ckpt")
    saved = state(engine)
    engine.close()

    fresh, *_ = tiermem.initialize(
        model=make_model(seed=3), config=nvme_offload_config(tmp_path / "s2")
    )
    before = state(fresh)
    for name in ("rank00000.safetensors", "manifest.json"):
        file = path / name
        pristine = file.read_bytes()
        for pos in positions(len(pristine)):
            damaged = bytearray(pristine)
            damaged[pos] ^= 1 << (pos % 8)
            file.write_bytes(bytes(damaged))
            with pytest.raises(CheckpointCorruptError, match=name.replace(".", r"\.")):
                fresh.load_checkpoint(tmp_path / "ckpt")
        file.write_bytes(pristine)
    after = state(fresh)
    assert after[0] == before[0] and all(torch.equal(v, before[1][k]) for k, v in after[1].items())
    fresh.load_checkpoint(tmp_path / "ckpt")
    loaded = state(fresh)
    assert loaded[0] == saved[0] and all(torch.equal(v, saved[1][k]) for k, v in loaded[1].items())
    fresh.close()
