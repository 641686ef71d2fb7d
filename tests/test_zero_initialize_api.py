"""tiermem.initialize mirrors deepspeed.initialize: what it returns and how it refuses bad input."""

from __future__ import annotations

import json

import pytest
import torch
from zero_helpers import BATCH, config, make_batches, make_model

import tiermem
from tiermem.engine.config import ConfigError


def test_returns_engine_optimizer_loader_scheduler(tmp_path):
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps(config(stage=3, offload="cpu")))
    data = torch.utils.data.TensorDataset(*make_batches(1, batch=20)[0])
    engine, optimizer, loader, scheduler = tiermem.initialize(
        model=make_model(), training_data=data, config=str(path)
    )
    assert isinstance(optimizer, torch.optim.Optimizer) and engine.optimizer is optimizer
    assert scheduler is None
    assert len(next(iter(loader))[0]) == BATCH  # the micro batch size
    assert engine.get_lr() == [pytest.approx(1e-2)]
    assert engine.global_steps == 0
    engine.eval()
    assert not engine.module.training
    engine.train()
    assert engine.module.training
    for idx, tgt in loader:
        engine.backward(engine(idx, tgt))
        engine.step()
    assert engine.global_steps == 3 and engine.global_samples == 3 * BATCH
    with pytest.raises(NotImplementedError, match="save_checkpoint"):
        optimizer.state_dict()  # sharded: the engine's checkpoints save it
    engine.close()


def test_without_an_optimizer_forward_works_and_step_explains():
    cfg = config(stage=3)
    del cfg["optimizer"]
    engine, optimizer, _, _ = tiermem.initialize(model=make_model(), config=cfg)
    assert optimizer is None
    idx, tgt = make_batches(1)[0]
    with torch.no_grad():
        assert torch.isfinite(engine(idx, tgt))
    engine.backward(engine(idx, tgt))
    with pytest.raises(RuntimeError, match="no optimizer"):
        engine.step()
    engine.close()


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"zero_optimization": {"stage": 5}}, "stage"),
        ({"zero_optimization": {"stage": 1, "offload_param": {"device": "cpu"}}}, "offload_param"),
        ({"train_batch_size": 7, "train_micro_batch_size_per_gpu": 2}, "batch"),
    ],
)
def test_bad_config_names_the_field(bad, match):
    cfg = config(stage=1)
    cfg.update(bad)
    with pytest.raises(ConfigError, match=match):
        tiermem.initialize(model=make_model(), config=cfg)


def test_model_is_required():
    with pytest.raises(TypeError, match="model"):
        tiermem.initialize(model=None, config=config(stage=1))


def test_scheduler_from_config_drives_the_learning_rate():
    cfg = config(
        stage=2,
        extra={
            "scheduler": {
                "type": "WarmupLR",
                "params": {
                    "warmup_min_lr": 0.0,
                    "warmup_max_lr": 0.01,
                    "warmup_num_steps": 4,
                    "warmup_type": "linear",
                },
            }
        },
    )
    engine, optimizer, _, scheduler = tiermem.initialize(model=make_model(), config=cfg)
    assert scheduler is engine.lr_scheduler and scheduler.optimizer is optimizer
    lrs = [engine.get_lr()[0]]
    for idx, tgt in make_batches(6):
        engine.backward(engine(idx, tgt))
        engine.step()
        lrs.append(engine.get_lr()[0])
    assert lrs[0] == 0.0
    assert lrs[1:4] == pytest.approx([0.0025, 0.005, 0.0075])
    assert lrs[4:] == pytest.approx([0.01] * 3)
    engine.close()
