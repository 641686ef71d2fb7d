"""The tiermem/DeepSpeed JSON of a TiermemTrainer is resolved against TrainingArguments the way
transformers does for DeepSpeed: "auto" (and left-out) values come from the arguments, explicit
values must agree with them, and the engine is built with the result."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from hf_helpers import dataset, tiermem_trainer, tiny_model, training_args, zero_config
from test_engine_config_auto import HF_STYLE  # the config the Hugging Face docs show
from transformers import Trainer

from tiermem.engine.config import ConfigError
from tiermem.hf import resolve_trainer_config

ARGS = dict(
    per_device_train_batch_size=5,
    gradient_accumulation_steps=3,
    max_grad_norm=0.5,
    learning_rate=3e-3,
    adam_beta1=0.8,
    adam_beta2=0.95,
    adam_epsilon=1e-7,
    warmup_steps=0.1,
)


def test_auto_values_come_from_training_arguments(tmp_path):
    args = training_args(tmp_path, bf16=True, **ARGS)
    cfg = resolve_trainer_config(HF_STYLE, args, num_training_steps=100)
    assert cfg["train_micro_batch_size_per_gpu"] == 5
    assert cfg["gradient_accumulation_steps"] == 3
    assert cfg["train_batch_size"] == 15  # 5 * 3 * world size 1
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["optimizer"]["params"] == {
        "lr": 3e-3,
        "betas": [0.8, 0.95],
        "eps": 1e-7,
        "weight_decay": 0.0,
    }
    assert cfg["scheduler"]["params"] == {
        "warmup_min_lr": 0.0,
        "warmup_max_lr": 3e-3,
        "warmup_num_steps": 10,  # warmup_steps=0.1 of 100 steps
        "total_num_steps": 100,
    }
    assert cfg["bf16"]["enabled"] is True and cfg["fp16"]["enabled"] is False
    # left for the engine, which derives it from the model's hidden size
    assert cfg["zero_optimization"]["reduce_bucket_size"] == "auto"
    assert HF_STYLE["optimizer"]["params"]["lr"] == "auto"  # the caller's dict is not changed


def test_left_out_values_come_from_training_arguments(tmp_path):
    args = training_args(tmp_path, **ARGS)
    cfg = resolve_trainer_config({"zero_optimization": {"stage": 2}}, args, num_training_steps=7)
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == (5, 3)
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["optimizer"] == {
        "type": "AdamW",
        "params": {"lr": 3e-3, "betas": [0.8, 0.95], "eps": 1e-7, "weight_decay": 0.0},
    }
    assert cfg["fp16"] == {"enabled": False} and cfg["bf16"] == {"enabled": False}
    assert "scheduler" not in cfg  # the Trainer's own lr_scheduler_type is used


def test_explicit_values_that_disagree_are_all_named(tmp_path):
    args = training_args(tmp_path, **ARGS)
    config = {
        "train_micro_batch_size_per_gpu": 8,
        "gradient_accumulation_steps": 3,  # agrees
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    }
    with pytest.raises(ConfigError) as info:
        resolve_trainer_config(config, args, num_training_steps=10)
    message = str(info.value)
    assert info.value.path == "train_micro_batch_size_per_gpu"
    assert "per_device_train_batch_size gives 5" in message
    assert "optimizer.params.lr is 0.001 but TrainingArguments learning_rate gives 0.003" in message
    assert "gradient_accumulation_steps is" not in message


def test_agreeing_explicit_values_are_kept(tmp_path):
    args = training_args(tmp_path, **ARGS)
    config = {"train_batch_size": 15, "gradient_clipping": 0.5, "bf16": {"enabled": False}}
    cfg = resolve_trainer_config(config, args, num_training_steps=10)
    assert cfg["train_batch_size"] == 15 and cfg["train_micro_batch_size_per_gpu"] == 5


def test_optimizer_other_than_adamw_needs_the_config_section(tmp_path):
    args = training_args(tmp_path, optim="sgd")
    with pytest.raises(ConfigError) as info:
        resolve_trainer_config({}, args, num_training_steps=10)
    assert info.value.path == "optimizer" and "optim='sgd'" in str(info.value)
    cfg = resolve_trainer_config(
        {"optimizer": {"type": "Adam", "params": {}}}, args, num_training_steps=10
    )
    assert cfg["optimizer"]["type"] == "Adam"


def test_json_file_and_its_errors(tmp_path):
    args = training_args(tmp_path, **ARGS)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(HF_STYLE))
    assert resolve_trainer_config(path, args, num_training_steps=100) == resolve_trainer_config(
        HF_STYLE, args, num_training_steps=100
    )
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 2}))
    with pytest.raises(ConfigError) as info:
        resolve_trainer_config(path, args, num_training_steps=100)
    assert info.value.file == str(path)
    path.write_text(json.dumps({"zero_optimization": {"stgae": 1}}))
    with pytest.raises(ConfigError) as info:
        resolve_trainer_config(path, args, num_training_steps=100)
    assert info.value.path == "zero_optimization.stgae"


def test_weight_decay_is_filled_without_a_warning(tmp_path):
    args = training_args(tmp_path, weight_decay=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = resolve_trainer_config({}, args, num_training_steps=10)
    assert cfg["optimizer"]["params"]["weight_decay"] == 0.1


@pytest.mark.parametrize("offload", ["none", "cpu"])
def test_weight_decay_spares_what_the_trainer_spares(tmp_path, offload):
    """The engine's param groups are the plain Trainer's: decay on the parameters named by
    get_decay_parameter_names, none on the rest; frozen parameters in neither. Two steps
    give the plain Trainer's weights."""
    # [Note: attention's key bias gets a zero gradient up to rounding noise, which Adam
    #  with eps 1e-8 turns into lr-sized steps of either sign; eps 1e-4 keeps them small]
    run = dict(weight_decay=0.5, max_steps=2, warmup_steps=0, max_grad_norm=0.0, adam_epsilon=1e-4)
    trainer = tiermem_trainer(tmp_path, zero_config(tmp_path, stage=2, offload=offload), **run)
    model = trainer.model
    model.transformer.wpe.weight.requires_grad_(False)  # frozen: left out of both groups
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    decay = set(trainer.get_decay_parameter_names(model))
    assert any("bias" in n for n in before) and any("ln_" in n for n in before)
    assert not any("bias" in n or "ln_" in n for n in decay)
    groups = trainer.engine.optimizer.param_groups
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {names[id(p)] for p in groups[0]["params"]} == decay & trainable
    assert {names[id(p)] for p in groups[1]["params"]} == trainable - decay
    grouped = [names[id(p)] for g in groups for p in g["params"]]
    assert "transformer.wpe.weight" not in grouped and len(grouped) == len(set(grouped))
    assert trainer.engine.global_steps == 2
    after = trainer.engine.full_state_dict()

    plain_model = tiny_model()
    plain_model.transformer.wpe.weight.requires_grad_(False)
    plain = Trainer(
        model=plain_model, args=training_args(tmp_path / "plain", **run), train_dataset=dataset()
    )
    plain.train()
    expected = dict(plain_model.named_parameters())
    assert torch.equal(after["transformer.wpe.weight"], before["transformer.wpe.weight"])
    for name in ("transformer.h.0.ln_1.weight", "transformer.h.0.attn.c_attn.bias"):
        assert not torch.equal(after[name], before[name]), name  # it trained
    for name, value in expected.items():
        torch.testing.assert_close(after[name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)


def test_trainer_builds_the_engine_from_the_resolved_config(tmp_path):
    trainer = tiermem_trainer(tmp_path, HF_STYLE, bf16=True, **ARGS)
    assert trainer.engine is None  # built when training starts
    trainer.create_optimizer_and_scheduler(num_training_steps=50)
    engine = trainer.engine
    settings = engine.settings
    assert (settings.micro_batch_size, settings.gradient_accumulation_steps) == (5, 3)
    assert settings.gradient_clipping == 0.5
    assert settings.precision.kind == "bf16"
    assert settings.zero.stage == 3
    assert settings.zero.reduce_bucket_size == 32 * 32  # "auto" from the hidden size
    assert trainer.optimizer is engine.optimizer
    group = engine.optimizer.param_groups[0]
    assert (group["betas"], group["eps"]) == ((0.8, 0.95), 1e-7)
    scheduler = trainer.lr_scheduler
    assert scheduler is engine.lr_scheduler  # the config's WarmupDecayLR, not the Trainer's
    assert (scheduler.total_num_steps, scheduler.warmup_num_steps) == (50, 5)
    assert scheduler.lr_at(5) == [pytest.approx(3e-3)] * 2  # both param groups
    # the engine casts to bf16 itself; accelerate must not autocast on top
    assert trainer.accelerator.mixed_precision == "no"
