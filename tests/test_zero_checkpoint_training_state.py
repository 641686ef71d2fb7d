"""Everything besides the tensors comes back: step counters, gradient-accumulation position,
per-group Adam steps, the fp16 loss scaler, the LR schedule and the optimizer's learning rate,
persistent buffers and the caller's client_state; the continued losses are bit-equal."""

from __future__ import annotations

import pytest
import torch
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint

CFG = config(
    stage=2,
    offload="cpu",
    precision="fp16",
    gas=2,
    extra={
        "fp16": {"initial_scale_power": 8, "loss_scale_window": 2, "hysteresis": 1},
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {"warmup_max_lr": 0.01, "warmup_num_steps": 3, "total_num_steps": 12},
        },
    },
)


def model(seed: int):
    m = make_model(seed)
    m.register_buffer("seen", torch.full((3,), float(seed)))  # persistent
    return m


def run(engine, batches) -> list[float]:
    losses = []
    for idx, tgt in batches:
        loss = engine(idx, tgt)
        engine.backward(loss)
        engine.step()
        engine.module.seen.add_(1)
        losses.append(float(loss.detach()))
    return losses


def snapshot(engine) -> dict:
    return {
        "counters": (
            engine.global_steps,
            engine.global_samples,
            engine.micro_steps,
            engine.skipped_steps,
        ),
        "group_steps": dict(engine._group_steps),
        "scaler": engine.loss_scaler.state_dict(),
        "lr": engine.get_lr(),
        "scheduler": engine.lr_scheduler.state_dict(),
        "seen": engine.module.seen.tolist(),
    }


def test_training_state_round_trips(tmp_path):
    batches = make_batches(14)
    engine, *_ = tiermem.initialize(model=model(0), config=CFG)
    run(engine, batches[:8])  # 4 optimizer steps of 2 micro-steps
    client = {"epoch": 2, "loader": {"position": 8}, "ema": [0.5, 0.25]}
    save_checkpoint(engine, tmp_path, tag="mid", client_state=client)
    expected = snapshot(engine)
    assert expected["scaler"]["scale"] != 2.0**8  # the dynamic scale moved
    continued = run(engine, batches[8:])
    engine.close()

    fresh, *_ = tiermem.initialize(model=model(1), config=CFG)
    path, got_client = load_checkpoint(fresh, tmp_path)
    assert path == tmp_path / "mid" and got_client == client
    assert snapshot(fresh) == expected
    assert run(fresh, batches[8:]) == continued
    fresh.close()


def test_state_json_cannot_carry_is_refused_before_writing(tmp_path, caplog):
    engine, *_ = tiermem.initialize(model=make_model(), config=config(stage=1, gas=2))
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()  # half an accumulation
    save_checkpoint(engine, tmp_path / "half")
    assert "gradients accumulated since the last step are not saved" in caplog.text
    with pytest.raises(TypeError, match=r"client_state\['t'\]: a Tensor cannot be stored"):
        save_checkpoint(engine, tmp_path / "c", client_state={"t": torch.zeros(1)})
    with pytest.raises(TypeError, match=r"client_state: key 1 is not a str"):
        save_checkpoint(engine, tmp_path / "c", client_state={1: "x"})
    assert not (tmp_path / "c").exists()
    engine.close()
