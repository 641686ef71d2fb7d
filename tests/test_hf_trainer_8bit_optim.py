"""TrainingArguments(optim="adamw_bnb_8bit" / "adamw_8bit") runs tiermem's AdamW with
int8 moments (block-wise dynamic quantization in the fused CPU kernel)."""

from __future__ import annotations

import pytest
from hf_helpers import tiermem_trainer, training_args, zero_config

from tiermem.hf import resolve_trainer_config


@pytest.mark.parametrize("optim", ["adamw_bnb_8bit", "adamw_8bit"])
def test_8bit_optim_maps_to_int8_states(tmp_path, optim):
    args = training_args(tmp_path, optim=optim)
    cfg = resolve_trainer_config({"zero_optimization": {"stage": 2}}, args, num_training_steps=5)
    assert cfg["optimizer"]["type"] == "AdamW"
    assert cfg["optimizer"]["params"]["state_dtype"] == "int8"


def test_trainer_engine_keeps_int8_states(tmp_path):
    trainer = tiermem_trainer(
        tmp_path, zero_config(tmp_path, stage=3, offload="cpu"), optim="adamw_8bit"
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=5)
    engine = trainer.engine
    assert engine.settings.optimizer.state_dtype == "int8"
    assert engine.shard_optimizer.state_dtype == "int8"
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] > 0
