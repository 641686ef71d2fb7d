"""ZeRO stage requirements of the offload options (DeepSpeed's rules)."""

import pytest

from tiermem.engine.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("zero", "path", "expected"),
    [
        ({"stage": 2, "offload_param": {"device": "cpu"}}, "offload_param.device", '"stage": 3'),
        (
            {"stage": 0, "offload_optimizer": {"device": "cpu"}},
            "offload_optimizer.device",
            "1, 2 or 3",
        ),
        (
            {"stage": 2, "offload_optimizer": {"device": "nvme", "nvme_path": "/n"}},
            "offload_optimizer.device",
            '"stage": 3',
        ),
        (
            {"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.5}},
            "offload_optimizer.ratio",
            "stage 2",
        ),
        (
            {"stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": "/n", "ratio": 0.5}},
            "offload_optimizer.ratio",
            'device "nvme"',
        ),
    ],
)
def test_offload_needs_the_right_stage(zero, path, expected):
    with pytest.raises(ConfigError) as info:
        parse_config({"zero_optimization": zero})
    assert info.value.path == f"zero_optimization.{path}"
    assert expected in str(info.value)


def test_valid_combinations():
    parse_config({"zero_optimization": {"stage": 1, "offload_optimizer": {"device": "cpu"}}})
    parse_config({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
    cfg = parse_config(
        {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "ratio": 0.3}}}
    )
    assert cfg.zero_optimization.offload_optimizer.ratio == 0.3


def test_stage3_aliases_without_prefix():
    cfg = parse_config(
        {
            "zero_optimization": {
                "stage": 3,
                "prefetch_bucket_size": 7,
                "stage3_gather_fp16_weights_on_model_save": True,
            }
        }
    )
    assert cfg.zero_optimization.stage3_prefetch_bucket_size == 7
    assert cfg.zero_optimization.stage3_gather_16bit_weights_on_model_save is True
