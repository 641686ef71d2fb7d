"""Configs DeepSpeed 0.19.8 accepts are accepted with DeepSpeed's meaning; typos and keys in
the wrong place are still refused.

Each case here was refused before: sizes of 0, "auto" on true/false keys (accelerate's
template), top-level keys DeepSpeed does not read (it skips unknown top-level keys), the
legacy ``cpu_offload`` switches DeepSpeed still converts; fp16 keys inside ``bf16`` got
advice to move them where the fix is to delete them.
"""

from __future__ import annotations

import json
import warnings

import pytest
from zero_helpers import config, engine_losses, max_rel_diff, reference_losses

import tiermem
from tiermem.engine.config import ConfigError, ConfigWarning, parse_config
from tiermem.engine.settings import WHOLE_SHARD, engine_settings


def _quiet(raw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        return parse_config(raw)


def test_sizes_of_zero_that_deepspeed_allows():
    cfg = _quiet(
        {
            "zero_optimization": {
                "stage": 3,
                "sub_group_size": 0,
                "reduce_bucket_size": 0,
                "allgather_bucket_size": 0,
                "offload_param": {"device": "cpu", "buffer_count": 0, "buffer_size": 0},
                "offload_optimizer": {"device": "cpu", "buffer_count": 0},
            }
        }
    )
    zero = cfg.zero_optimization
    assert (zero.sub_group_size, zero.reduce_bucket_size, zero.allgather_bucket_size) == (0, 0, 0)
    settings = engine_settings(cfg, world_size=1)
    # DeepSpeed: 0 makes every parameter its own sub-group; here: shards are never split
    assert settings.zero.sub_group_size == WHOLE_SHARD
    assert settings.zero.reduce_bucket_size == 0  # each group's gradients reduced alone


@pytest.mark.parametrize("offload", ["cpu", "nvme"])
def test_sub_group_size_zero_trains_like_the_default(tmp_path, offload):
    cfg = config(stage=3, offload=offload, offload_param=offload)
    for key in ("offload_param", "offload_optimizer"):
        if offload == "nvme":
            cfg["zero_optimization"][key]["nvme_path"] = str(tmp_path)
    cfg["zero_optimization"].update(sub_group_size=0, reduce_bucket_size=0)
    assert max_rel_diff(engine_losses(cfg, steps=4), reference_losses()[:4]) <= 1e-5


def test_auto_on_true_false_keys_means_the_default():
    cfg = parse_config(
        {
            "zero_optimization": {
                "stage": 3,
                "stage3_gather_16bit_weights_on_model_save": "auto",
                "overlap_comm": "auto",
                "contiguous_gradients": "auto",
            },
            "wall_clock_breakdown": "auto",
        }
    )
    zero = cfg.zero_optimization
    assert zero.stage3_gather_16bit_weights_on_model_save is False
    assert zero.overlap_comm is True  # DeepSpeed's default at stage 3
    assert zero.contiguous_gradients is True and cfg.wall_clock_breakdown is False
    # a number key still refuses "auto" where it has no derivation
    with pytest.raises(ConfigError, match='"auto" is not accepted here'):
        parse_config({"zero_optimization": {"sub_group_size": "auto"}})


@pytest.mark.parametrize("key", ["comms_config", "monitor_config", "my_project_notes"])
def test_top_level_keys_deepspeed_does_not_read_warn_naming_the_key(key):
    with pytest.warns(ConfigWarning) as record:
        cfg = parse_config({key: {"enabled": True}, "train_micro_batch_size_per_gpu": 2})
    assert len(record) == 1
    assert key in str(record[0].message) and "not a DeepSpeed config key" in str(record[0].message)
    assert cfg.ignored_keys == (key,)


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("train_batch_sise", "train_batch_size"),
        ("zero_optimisation", "zero_optimization"),
        ("gradient_clippping", "gradient_clipping"),
        ("optimiser", "optimizer"),
        ("tensorbord", None),  # a typo of a key DeepSpeed knows and tiermem ignores
    ],
)
def test_top_level_typos_are_still_errors(key, suggestion):
    with pytest.raises(ConfigError) as info:
        parse_config({key: 1})
    assert info.value.path == key
    if suggestion:
        assert f'did you mean "{suggestion}"?' in str(info.value)


def test_keys_in_the_wrong_place_are_still_errors():
    with pytest.raises(ConfigError, match='did you mean "zero_optimization.offload_param"'):
        parse_config({"offload_param": {"device": "cpu"}})
    with pytest.raises(ConfigError, match='did you mean the top-level "aio"'):
        parse_config({"zero_optimization": {"aio": {}}})
    with pytest.raises(ConfigError):  # sections refuse unknown keys, as DeepSpeed's do
        parse_config({"zero_optimization": {"my_notes": 1}})


def test_legacy_cpu_offload_is_converted_as_deepspeed_does():
    with pytest.warns(ConfigWarning, match="cpu_offload is deprecated"):
        cfg = parse_config({"zero_optimization": {"stage": 2, "cpu_offload": True}})
    assert cfg.zero_optimization.offload_optimizer.device == "cpu"
    with pytest.warns(ConfigWarning, match="cpu_offload_param is deprecated"):
        cfg = parse_config({"zero_optimization": {"stage": 3, "cpu_offload_param": True}})
    assert cfg.zero_optimization.offload_param.device == "cpu"
    cfg = parse_config({"zero_optimization": {"stage": 2, "cpu_offload": False}})
    assert cfg.zero_optimization.offload_optimizer.device == "none"
    with pytest.warns(ConfigWarning, match="cpu_offload_use_pin_memory"):
        parse_config({"zero_optimization": {"stage": 2, "cpu_offload_use_pin_memory": True}})
    with pytest.raises(ConfigError, match="give only one of them"):
        parse_config(
            {
                "zero_optimization": {
                    "stage": 2,
                    "cpu_offload": True,
                    "offload_optimizer": {"device": "cpu"},
                }
            }
        )


@pytest.mark.parametrize("spelling", ["bf16", "bfloat16"])
def test_fp16_keys_inside_bf16_are_to_be_deleted_in_the_files_spelling(tmp_path, spelling):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({spelling: {"enabled": True, "loss_scale": 0, "hysteresis": 2}}))
    with pytest.raises(ConfigError) as info:
        parse_config(path)
    message = str(info.value)
    assert info.value.path == f"{spelling}.loss_scale"
    assert f'delete "loss_scale" from "{spelling}"' in message
    assert "fp16." not in message  # no advice to move it


def test_activation_checkpointing_knobs_warn_that_nothing_acts_on_them():
    with pytest.warns(ConfigWarning) as record:
        cfg = parse_config(
            {
                "activation_checkpointing": {
                    "partition_activations": True,
                    "contiguous_memory_optimization": True,
                    "number_checkpoints": 4,
                    "synchronize_checkpoint_boundary": True,
                    "profile": True,
                    "cpu_checkpointing": True,
                }
            }
        )
    assert len(record) == 1 and "not acted on" in str(record[0].message)
    assert len(cfg.ignored_keys) == 5 and all("checkpointing." in k for k in cfg.ignored_keys)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConfigWarning)  # defaults: nothing to warn about
        parse_config({"activation_checkpointing": {"partition_activations": False}})


def test_pin_memory_defaults_to_false_like_deepspeed():
    zero = parse_config({"zero_optimization": {"stage": 3}}).zero_optimization
    assert zero.offload_param.pin_memory is False and zero.offload_optimizer.pin_memory is False


def test_scheduler_auto_at_initialize_names_what_initialize_takes():
    cfg = config(stage=0)
    cfg["scheduler"] = {"type": "WarmupDecayLR", "params": {"total_num_steps": "auto"}}
    from zero_helpers import make_model

    with pytest.raises(ConfigError) as info:
        tiermem.initialize(model=make_model(), config=cfg)
    message = str(info.value)
    assert info.value.path == "scheduler.params.total_num_steps"
    assert "lr_scheduler= to tiermem.initialize" in message
    assert "pass total_steps= to build_lr_scheduler" not in message


@pytest.mark.parametrize("value, stage", [(True, 1), (False, 0)])
def test_zero_optimization_as_a_boolean_is_read_as_deepspeed_reads_it(value, stage):
    with pytest.warns(ConfigWarning, match="is deprecated"):
        cfg = parse_config({"zero_optimization": value, "allgather_size": 5e8})
    assert cfg.zero_optimization.stage == stage
