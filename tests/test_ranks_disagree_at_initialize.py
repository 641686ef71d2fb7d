"""Ranks launched with different configs or models fail at initialize, naming the rank and key."""

from __future__ import annotations

import torch
from zero_helpers import LR, config, make_model, run_ranks


def _initialize(rank: int, world: int, what: str) -> str:
    import tiermem

    cfg = config(stage=3, world=world)
    model = make_model()
    if rank == 1 and what == "config":
        cfg["optimizer"]["params"]["lr"] = LR * 2
    if rank == 1 and what == "model":
        model.ln_f = torch.nn.LayerNorm(model.ln_f.normalized_shape[0] + 1)
    try:
        engine, *_ = tiermem.initialize(model=model, config=cfg)
    except Exception as exc:  # noqa: BLE001 - the error is what the test checks
        return f"{type(exc).__name__}: {exc}"
    engine.close()
    return "started"


def test_ranks_with_different_configs_fail_naming_the_key():
    errors = run_ranks(_initialize, "config")
    for message in errors:
        assert message.startswith("ConfigError: optimizer.params.lr: "), message
        assert f"rank 1 has {LR * 2}" in message and f"rank 0 has {LR}" in message, message


def test_ranks_with_different_models_fail_naming_the_parameter():
    errors = run_ranks(_initialize, "model")
    for message in errors:
        assert message.startswith("ValueError: the ranks built different models"), message
        assert "ln_f.weight" in message and "rank 1 has" in message, message
