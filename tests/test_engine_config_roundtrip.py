"""A full DeepSpeed-style config parses into typed sections and round-trips through to_dict."""

import dataclasses
import json

import pytest

from tiermem.engine.config import (
    ActivationCheckpointingConfig,
    AioSectionConfig,
    OffloadConfig,
    OffloadOptimizerConfig,
    TiermemConfig,
    WarmupDecayLRParams,
    parse_config,
)

FULL = {
    "train_batch_size": 64,
    "train_micro_batch_size_per_gpu": 4,
    "gradient_accumulation_steps": 8,
    "gradient_clipping": 1.0,
    "steps_per_print": 50,
    "wall_clock_breakdown": True,
    "seed": 1234,
    "optimizer": {
        "type": "AdamW",
        "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-6, "weight_decay": 0.1},
    },
    "scheduler": {
        "type": "WarmupDecayLR",
        "params": {
            "warmup_min_lr": 0,
            "warmup_max_lr": 3e-4,
            "warmup_num_steps": 100,
            "total_num_steps": 1000,
            "warmup_type": "linear",
        },
    },
    "fp16": {
        "enabled": True,
        "loss_scale": 0,
        "initial_scale_power": 12,
        "loss_scale_window": 500,
        "hysteresis": 3,
        "consecutive_hysteresis": True,
        "min_loss_scale": 0.5,
    },
    "zero_optimization": {
        "stage": 3,
        "offload_param": {
            "device": "nvme",
            "nvme_path": "/local_nvme",
            "pin_memory": False,
            "buffer_count": 6,
            "buffer_size": 2e8,
            "max_in_cpu": 1e9,
        },
        "offload_optimizer": {
            "device": "nvme",
            "nvme_path": ["/nvme0", "/nvme1"],
            "buffer_count": 5,
            "pipeline_read": True,
            "pipeline_write": True,
            "fast_init": True,
        },
        "sub_group_size": 1e8,
        "stage3_prefetch_bucket_size": 0,
        "stage3_max_live_parameters": 3e8,
        "stage3_max_reuse_distance": 2e8,
        "stage3_param_persistence_threshold": 1e4,
        "stage3_gather_16bit_weights_on_model_save": True,
        "reduce_bucket_size": 1e8,
        "allgather_bucket_size": 2e8,
        "overlap_comm": False,
        "contiguous_gradients": False,
        "reduce_scatter": False,
        "round_robin_gradients": True,
    },
    "aio": {
        "block_size": 4194304,
        "queue_depth": 32,
        "intra_op_parallelism": 4,
        "single_submit": True,
        "overlap_events": False,
        "use_gds": False,
        "backend": "threads",
        "direct": "off",
    },
    "activation_checkpointing": {
        "partition_activations": True,
        "cpu_checkpointing": True,
        "contiguous_memory_optimization": True,
        "number_checkpoints": 4,
        "synchronize_checkpoint_boundary": True,
        "profile": True,
    },
}


def test_full_config_fields_are_typed():
    cfg = parse_config(FULL)
    assert isinstance(cfg, TiermemConfig)
    assert (cfg.train_batch_size, cfg.train_micro_batch_size_per_gpu) == (64, 4)
    assert cfg.gradient_accumulation_steps == 8
    assert cfg.gradient_clipping == 1.0 and cfg.steps_per_print == 50
    assert cfg.wall_clock_breakdown is True and cfg.seed == 1234
    opt = cfg.optimizer
    assert (opt.type, opt.lr, opt.betas, opt.eps, opt.weight_decay) == (
        "AdamW",
        3e-4,
        (0.9, 0.95),
        1e-6,
        0.1,
    )
    assert opt.adamw_mode is True
    sched = cfg.scheduler
    assert sched.type == "WarmupDecayLR" and isinstance(sched.params, WarmupDecayLRParams)
    assert sched.params.total_num_steps == 1000 and sched.params.warmup_type == "linear"
    fp16 = cfg.fp16
    assert fp16.enabled is True and fp16.dynamic_loss_scale
    assert (fp16.initial_scale_power, fp16.loss_scale_window, fp16.hysteresis) == (12, 500, 3)
    assert fp16.consecutive_hysteresis is True and fp16.min_loss_scale == 0.5
    assert cfg.bf16.enabled is False
    zero = cfg.zero_optimization
    assert zero.stage == 3
    assert isinstance(zero.offload_param, OffloadConfig)
    assert zero.offload_param.nvme_path == ("/local_nvme",)
    assert zero.offload_param.buffer_size == 200_000_000
    assert isinstance(zero.offload_param.buffer_size, int)
    assert isinstance(zero.offload_optimizer, OffloadOptimizerConfig)
    assert zero.offload_optimizer.nvme_path == ("/nvme0", "/nvme1")
    assert zero.offload_optimizer.pipeline
    assert zero.sub_group_size == 100_000_000 and zero.stage3_prefetch_bucket_size == 0
    assert zero.overlap_comm is False and zero.round_robin_gradients is True
    assert isinstance(cfg.aio, AioSectionConfig) and cfg.aio.intra_op_parallelism == 4
    ac = cfg.activation_checkpointing
    assert isinstance(ac, ActivationCheckpointingConfig) and ac.number_checkpoints == 4
    # DeepSpeed's Megatron-style checkpointing knobs, set here, are accepted and not acted on
    assert set(cfg.ignored_keys) == {
        f"activation_checkpointing.{key}" for key in ActivationCheckpointingConfig.NOT_ACTED_ON
    }


def test_to_dict_round_trips_through_json():
    cfg = parse_config(FULL)
    again = parse_config(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()
    # the normalized form writes a single path as a string (DeepSpeed reads it) and
    # several as a list
    zero = cfg.to_dict()["zero_optimization"]
    assert zero["offload_param"]["nvme_path"] == "/local_nvme"
    assert zero["offload_optimizer"]["nvme_path"] == ["/nvme0", "/nvme1"]


def test_empty_config_gets_deepspeed_defaults():
    cfg = parse_config({})
    assert cfg == parse_config(None)
    assert cfg.optimizer is None and cfg.scheduler is None
    assert cfg.gradient_clipping == 0.0 and cfg.steps_per_print is None
    zero = cfg.zero_optimization
    assert zero.stage == 0 and zero.overlap_comm is False and zero.contiguous_gradients
    assert zero.offload_param.device == "none" and zero.offload_param.pin_memory is False
    assert (zero.offload_param.buffer_count, zero.offload_optimizer.buffer_count) == (5, 4)
    assert zero.offload_param.buffer_size == 10**8 and zero.offload_param.max_in_cpu == 10**9
    assert zero.sub_group_size == 10**9 and zero.stage3_prefetch_bucket_size == 5 * 10**7
    assert zero.stage3_param_persistence_threshold == 10**5
    assert zero.reduce_bucket_size == 5 * 10**8 and zero.allgather_bucket_size == 5 * 10**8
    assert (cfg.aio.block_size, cfg.aio.queue_depth, cfg.aio.intra_op_parallelism) == (
        1 << 20,
        8,
        1,
    )
    assert cfg.aio.overlap_events is True and cfg.aio.single_submit is False
    assert (cfg.fp16.initial_scale_power, cfg.fp16.loss_scale_window, cfg.fp16.hysteresis) == (
        16,
        1000,
        2,
    )
    assert cfg.fp16.min_loss_scale == 1.0
    assert parse_config(cfg) is cfg


def test_stage3_turns_overlap_comm_on_by_default():
    assert parse_config({"zero_optimization": {"stage": 3}}).zero_optimization.overlap_comm
    assert not parse_config({"zero_optimization": {"stage": 2}}).zero_optimization.overlap_comm


def test_sections_are_frozen_and_keyword_only():
    cfg = parse_config(FULL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.zero_optimization.stage = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        OffloadConfig("cpu")  # type: ignore[misc]
    # constructing a section directly normalizes and validates like the parser
    assert OffloadConfig(device="NVMe", nvme_path="/x") == OffloadConfig(
        device="nvme", nvme_path=("/x",)
    )
