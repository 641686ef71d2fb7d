"""The config's ``seed`` seeds the RNGs at initialize: same seed, same draws after it."""

from __future__ import annotations

import random

import numpy as np
import torch

import tiermem


def _draws_after_initialize(seed: int | None) -> tuple[float, float, list[float]]:
    cfg = {"train_micro_batch_size_per_gpu": 1, "optimizer": {"type": "AdamW"}}
    if seed is not None:
        cfg["seed"] = seed
    engine, *_ = tiermem.initialize(model=torch.nn.Linear(4, 4), config=cfg)
    try:
        return random.random(), float(np.random.random()), torch.rand(3).tolist()
    finally:
        engine.close()


def test_same_seed_same_draws_and_other_seeds_differ():
    a = _draws_after_initialize(2**40 + 7)  # above NumPy's 32-bit seed range too
    random.random(), np.random.random(), torch.rand(5)  # disturb every RNG in between
    b = _draws_after_initialize(2**40 + 7)
    c = _draws_after_initialize(8)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1] and a[2] != c[2]


def test_no_seed_does_not_reseed():
    torch.manual_seed(123)
    first = _draws_after_initialize(None)
    torch.manual_seed(456)
    second = _draws_after_initialize(None)
    assert first[2] != second[2]  # torch's draws follow the caller's seed, not a fixed one
