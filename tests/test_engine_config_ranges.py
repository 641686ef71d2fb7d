"""Values out of range are errors naming the path and the accepted range."""

import pytest

from tiermem.engine.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("config", "path", "expected"),
    [
        ({"zero_optimization": {"stage": 4}}, "zero_optimization.stage", "in [0, 3], got 4"),
        ({"zero_optimization": {"stage": -1}}, "zero_optimization.stage", "in [0, 3]"),
        ({"train_batch_size": 0}, "train_batch_size", ">= 1"),
        ({"gradient_accumulation_steps": -2}, "gradient_accumulation_steps", ">= 1"),
        ({"gradient_clipping": -1.0}, "gradient_clipping", ">= 0"),
        ({"aio": {"block_size": 1000}}, "aio.block_size", "multiple of 4096"),
        ({"aio": {"block_size": 2 << 30}}, "aio.block_size", "1073741824"),
        ({"aio": {"queue_depth": 0}}, "aio.queue_depth", "in [1, 4096]"),
        ({"aio": {"intra_op_parallelism": 0}}, "aio.intra_op_parallelism", "in [1, 256]"),
        ({"fp16": {"min_loss_scale": 0}}, "fp16.min_loss_scale", "> 0"),
        ({"fp16": {"hysteresis": 0}}, "fp16.hysteresis", ">= 1"),
        ({"fp16": {"initial_scale_power": 200}}, "fp16.initial_scale_power", "in [0, 127]"),
        (
            {"zero_optimization": {"offload_param": {"buffer_count": -1}}},
            "zero_optimization.offload_param.buffer_count",
            ">= 0",
        ),
        (
            {"zero_optimization": {"stage": 3, "offload_optimizer": {"ratio": 1.5}}},
            "zero_optimization.offload_optimizer.ratio",
            "in [0, 1]",
        ),
        (
            {"zero_optimization": {"sub_group_size": -1}},
            "zero_optimization.sub_group_size",
            ">= 0",
        ),
        (
            {"optimizer": {"type": "Adam", "params": {"betas": [0.9, 1.0]}}},
            "optimizer.params.betas",
            "in [0, 1)",
        ),
        ({"optimizer": {"type": "Adam", "params": {"lr": -1e-3}}}, "optimizer.params.lr", ">= 0"),
        (
            {"scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 0}}},
            "scheduler.params.total_num_steps",
            ">= 1",
        ),
        (
            {
                "scheduler": {
                    "type": "WarmupCosineLR",
                    "params": {"total_num_steps": 9, "cos_min_ratio": 2},
                }
            },
            "scheduler.params.cos_min_ratio",
            "in [0, 1]",
        ),
        ({"seed": -1}, "seed", "in [0, 18446744073709551615]"),
    ],
)
def test_out_of_range_is_an_error_naming_the_path(config, path, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    assert info.value.path == path
    assert expected in str(info.value)


def test_non_finite_numbers_are_rejected():
    with pytest.raises(ConfigError) as info:
        parse_config({"gradient_clipping": float("inf")})
    assert info.value.path == "gradient_clipping"
