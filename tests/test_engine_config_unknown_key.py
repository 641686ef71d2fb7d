"""Unknown keys are errors naming the dotted path and the nearest valid key; known
DeepSpeed keys tiermem does not act on are accepted with a ConfigWarning."""

import warnings

import pytest

from tiermem.engine.config import ConfigError, ConfigWarning, parse_config


def error_of(config) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    return info.value


def test_typo_names_path_and_suggests_the_valid_key():
    err = error_of({"zero_optimization": {"stage": 3, "stage3_prefetch_bucket": 0}})
    assert err.path == "zero_optimization.stage3_prefetch_bucket"
    assert str(err).startswith("zero_optimization.stage3_prefetch_bucket:")
    assert 'did you mean "stage3_prefetch_bucket_size"?' in str(err)


def test_typo_in_nested_offload_section():
    err = error_of({"zero_optimization": {"offload_param": {"devcie": "cpu"}}})
    assert err.path == "zero_optimization.offload_param.devcie"
    assert 'did you mean "device"?' in str(err)


def test_aio_inside_zero_optimization_points_to_top_level_aio():
    # DeepSpeed issue 1543: the reporter's aio block sat here, where it is never read
    err = error_of({"zero_optimization": {"stage": 3, "aio": {"queue_depth": 16}}})
    assert err.path == "zero_optimization.aio"
    assert 'did you mean the top-level "aio"?' in str(err)


def test_zero_key_at_top_level_points_into_zero_optimization():
    err = error_of({"offload_optimizer": {"device": "cpu"}})
    assert err.path == "offload_optimizer"
    assert 'did you mean "zero_optimization.offload_optimizer"?' in str(err)


def test_wrong_case_is_suggested():
    err = error_of({"fp16": {"Enabled": True}})
    assert 'did you mean "enabled"?' in str(err)


def test_unknown_key_with_no_near_match_lists_the_valid_keys():
    err = error_of({"activation_checkpointing": {"zzz": 1}})
    assert err.path == "activation_checkpointing.zzz"
    assert "valid keys here:" in str(err) and "cpu_checkpointing" in str(err)


def test_unknown_optimizer_and_scheduler_params_are_errors():
    err = error_of({"optimizer": {"type": "Adam", "params": {"lrr": 1e-3}}})
    assert err.path == "optimizer.params.lrr" and 'did you mean "lr"?' in str(err)
    err = error_of({"scheduler": {"type": "WarmupLR", "params": {"warmup_steps": 5}}})
    assert err.path == "scheduler.params.warmup_steps"
    assert 'did you mean "warmup_num_steps"?' in str(err)


def test_known_deepspeed_keys_are_ignored_with_one_warning():
    config = {
        "comms_logger": {"enabled": True},
        "flops_profiler": {"enabled": False},
        "tensorboard": {"enabled": True, "output_path": "/tmp"},
        "zero_allow_untested_optimizer": True,
        "zero_optimization": {"stage": 3, "allgather_partitions": True},
        "fp16": {"enabled": True, "auto_cast": False},
        "optimizer": {"type": "Adam", "params": {"torch_adam": False}},
    }
    with pytest.warns(ConfigWarning) as record:
        cfg = parse_config(config)
    assert len(record) == 1
    message = str(record[0].message)
    for key in ("comms_logger", "flops_profiler", "tensorboard", "zero_allow_untested_optimizer"):
        assert key in message
    assert set(cfg.ignored_keys) == {
        "comms_logger",
        "flops_profiler",
        "tensorboard",
        "zero_allow_untested_optimizer",
        "zero_optimization.allgather_partitions",
        "fp16.auto_cast",
        "optimizer.params.torch_adam",
    }
    # ignored keys are not part of the normalized config
    assert "comms_logger" not in cfg.to_dict()


def test_clean_config_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_config({"zero_optimization": {"stage": 2}})


def test_replaced_keys_point_to_their_replacement():
    err = error_of({"amp": {"enabled": True}})
    assert err.path == "amp" and '"bf16"' in str(err)


def test_unsupported_optimizer_and_scheduler_types():
    err = error_of({"optimizer": {"type": "OneBitLamb", "params": {}}})
    assert err.path == "optimizer.type" and '"AdamW"' in str(err)
    err = error_of({"scheduler": {"type": "OneCycle", "params": {}}})
    assert err.path == "scheduler.type" and '"WarmupCosineLR"' in str(err)
    err = error_of({"optimizer": {"type": "Adam", "param": {}}})
    assert err.path == "optimizer.param" and 'did you mean "params"?' in str(err)
