"""Values of the wrong JSON type are errors naming the path, what was expected and what came."""

import pytest

from tiermem.engine.config import ConfigError, parse_config


@pytest.mark.parametrize(
    ("config", "path", "expected"),
    [
        ({"aio": {"single_submit": "false"}}, "aio.single_submit", "write false without quotes"),
        ({"aio": {"queue_depth": "16"}}, "aio.queue_depth", "write the number without quotes"),
        ({"zero_optimization": {"stage": True}}, "zero_optimization.stage", "an integer"),
        ({"zero_optimization": {"stage": 2.5}}, "zero_optimization.stage", "an integer"),
        ({"aio": {"overlap_events": 1}}, "aio.overlap_events", "true or"),
        ({"zero_optimization": {"overlap_comm": 2}}, "zero_optimization.overlap_comm", "true or"),
        ({"gradient_clipping": [1.0]}, "gradient_clipping", "a number"),
        ({"fp16": {"loss_scale": True}}, "fp16.loss_scale", "a number"),
        ({"zero_optimization": 3}, "zero_optimization", "expected an object"),
        (
            {"zero_optimization": {"offload_param": "cpu"}},
            "zero_optimization.offload_param",
            "an object",
        ),
        (
            {"zero_optimization": {"offload_param": {"device": "gpu"}}},
            "zero_optimization.offload_param.device",
            '"none", "cpu", "nvme"',
        ),
        (
            {
                "zero_optimization": {
                    "stage": 3,
                    "offload_param": {"device": "nvme", "nvme_path": 7},
                }
            },
            "zero_optimization.offload_param.nvme_path",
            "a path or a non-empty list",
        ),
        (
            {"optimizer": {"type": "Adam", "params": {"betas": 0.9}}},
            "optimizer.params.betas",
            "two",
        ),
        (
            {"optimizer": {"type": "Adam", "params": {"lr": "1e-3"}}},
            "optimizer.params.lr",
            "number",
        ),
        (
            {"scheduler": {"type": "WarmupLR", "params": {"warmup_type": "cosine"}}},
            "scheduler.params.warmup_type",
            '"log", "linear"',
        ),
        ({"activation_checkpointing": {"number_checkpoints": False}}, None, "an integer"),
        ({"seed": 1.5}, "seed", "an integer"),
        ({"optimizer": None, "scheduler": {"type": 3}}, "scheduler.type", "WarmupLR"),
        (
            {"steps_per_print": None, "fp16": None, "aio": {"backend": "spdk"}},
            "aio.backend",
            "io_uring",
        ),
    ],
)
def test_wrong_type_is_an_error_naming_the_path(config, path, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(config)
    err = info.value
    if path is not None:
        assert err.path == path
        assert str(err).startswith(path + ":")
    assert expected in str(err)


def test_integral_float_is_accepted_for_an_integer_field():
    cfg = parse_config({"zero_optimization": {"reduce_bucket_size": 5e8}})
    assert cfg.zero_optimization.reduce_bucket_size == 500_000_000
    assert type(cfg.zero_optimization.reduce_bucket_size) is int


def test_top_level_must_be_an_object():
    with pytest.raises(ConfigError, match="expected a dict, a path"):
        parse_config([{"train_batch_size": 1}])
    with pytest.raises(ConfigError, match="expected a dict, a path"):
        parse_config(42)
    with pytest.raises(ConfigError, match="keys must be strings"):
        parse_config({1: 2})


def test_choice_values_are_case_insensitive_with_canonical_output():
    cfg = parse_config(
        {
            "optimizer": {"type": "adamw"},
            "scheduler": {"type": "warmupcosinelr", "params": {"total_num_steps": 10}},
            "zero_optimization": {"stage": 3, "offload_param": {"device": "CPU"}},
        }
    )
    assert cfg.optimizer.type == "AdamW"
    assert cfg.scheduler.type == "WarmupCosineLR"
    assert cfg.zero_optimization.offload_param.device == "cpu"
