""" "auto" (written by the Hugging Face Trainer) is kept as AUTO where DeepSpeed/HF accept
it, rejected elsewhere, and resolve_auto derives the values with the documented rules."""

import warnings

import pytest
import torch

from tiermem.engine.config import AUTO, ConfigError, ConfigWarning, parse_config

HF_STYLE = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "optimizer": {
        "type": "AdamW",
        "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
    },
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": "auto",
            "warmup_max_lr": "auto",
            "warmup_num_steps": "auto",
            "total_num_steps": "auto",
        },
    },
    "fp16": {"enabled": "auto"},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {
        "stage": 3,
        "reduce_bucket_size": "auto",
        "stage3_prefetch_bucket_size": "auto",
        "stage3_param_persistence_threshold": "auto",
        "stage3_max_live_parameters": 1e9,
    },
}


def test_auto_is_kept_as_the_sentinel_and_round_trips():
    cfg = parse_config(HF_STYLE)
    assert cfg.train_batch_size is AUTO and cfg.gradient_clipping is AUTO
    assert cfg.optimizer.lr is AUTO and cfg.optimizer.betas is AUTO
    assert cfg.scheduler.params.total_num_steps is AUTO
    assert cfg.fp16.enabled is AUTO and cfg.bf16.enabled is AUTO
    assert cfg.zero_optimization.reduce_bucket_size is AUTO
    out = cfg.to_dict()
    assert out["optimizer"]["params"]["lr"] == "auto"
    assert out["zero_optimization"]["stage3_prefetch_bucket_size"] == "auto"
    assert parse_config(out) == cfg


@pytest.mark.parametrize(
    ("config", "path"),
    [
        ({"zero_optimization": {"stage": "auto"}}, "zero_optimization.stage"),
        ({"zero_optimization": {"sub_group_size": "auto"}}, "zero_optimization.sub_group_size"),
        ({"aio": {"queue_depth": "auto"}}, "aio.queue_depth"),
        ({"steps_per_print": "auto"}, "steps_per_print"),
        ({"fp16": {"loss_scale": "auto"}}, "fp16.loss_scale"),
    ],
)
def test_auto_where_not_accepted_is_an_error(config, path):
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert info.value.path == path
    assert '"auto" is not accepted here' in str(info.value)


def test_resolve_auto_derives_from_model_and_machine():
    cfg = parse_config(HF_STYLE)
    with pytest.warns(ConfigWarning, match="optimizer.params.lr=5e-05"):
        resolved = cfg.resolve_auto(world_size=2, hidden_size=100, model_dtype=torch.bfloat16)
    assert (resolved.train_batch_size, resolved.train_micro_batch_size_per_gpu) == (2, 1)
    assert resolved.gradient_accumulation_steps == 1
    assert resolved.gradient_clipping == 1.0
    opt = resolved.optimizer
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay) == (5e-5, (0.9, 0.999), 1e-8, 0.0)
    assert resolved.bf16.enabled is True and resolved.fp16.enabled is False
    zero = resolved.zero_optimization
    assert zero.reduce_bucket_size == 100 * 100
    assert zero.stage3_prefetch_bucket_size == 9000
    assert zero.stage3_param_persistence_threshold == 1000
    # scheduler "auto" is left to build_lr_scheduler (it needs the step counts)
    assert resolved.scheduler.params.total_num_steps is AUTO


def test_resolve_auto_without_model_facts_uses_deepspeed_defaults():
    cfg = parse_config(
        {"zero_optimization": HF_STYLE["zero_optimization"], "fp16": {"enabled": "auto"}}
    )
    resolved = cfg.resolve_auto(world_size=1)
    assert resolved.zero_optimization.reduce_bucket_size == 500_000_000
    assert resolved.zero_optimization.stage3_prefetch_bucket_size == 50_000_000
    assert resolved.zero_optimization.stage3_param_persistence_threshold == 100_000
    assert resolved.fp16.enabled is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing was filled from a guess: no warning
        cfg.resolve_auto(world_size=1)
    assert resolved.resolve_auto(world_size=1) == resolved
