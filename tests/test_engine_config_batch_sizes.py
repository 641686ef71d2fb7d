"""DeepSpeed's batch-size rules: any two of train/micro/accumulation determine the third."""

import pytest

from tiermem.engine.config import BatchSizes, ConfigError, parse_config


def sizes(world_size, **given):
    return parse_config(given).resolve_batch_sizes(world_size)


def test_parsed_values_are_kept_as_given():
    cfg = parse_config({"train_batch_size": 32, "gradient_accumulation_steps": "auto"})
    assert cfg.train_batch_size == 32
    assert cfg.train_micro_batch_size_per_gpu is None
    assert repr(cfg.gradient_accumulation_steps) == "AUTO"


@pytest.mark.parametrize(
    ("world", "given", "expected"),
    [
        # all three, consistent
        (
            2,
            {
                "train_batch_size": 48,
                "train_micro_batch_size_per_gpu": 4,
                "gradient_accumulation_steps": 6,
            },
            (48, 4, 6),
        ),
        # train + micro -> accumulation = 64 / (4 * 4)
        (4, {"train_batch_size": 64, "train_micro_batch_size_per_gpu": 4}, (64, 4, 4)),
        # train + accumulation -> micro = 64 / (2 * 8)
        (2, {"train_batch_size": 64, "gradient_accumulation_steps": 8}, (64, 4, 8)),
        # micro + accumulation -> train = 3 * 5 * 3
        (3, {"train_micro_batch_size_per_gpu": 3, "gradient_accumulation_steps": 5}, (45, 3, 5)),
        # train alone -> accumulation 1
        (4, {"train_batch_size": 32}, (32, 8, 1)),
        # micro alone -> accumulation 1
        (2, {"train_micro_batch_size_per_gpu": 6}, (12, 6, 1)),
        # accumulation alone -> micro 1
        (2, {"gradient_accumulation_steps": 3}, (6, 1, 3)),
        # none -> micro 1, accumulation 1
        (5, {}, (5, 1, 1)),
        # "auto" counts as not given
        (
            2,
            {
                "train_batch_size": "auto",
                "train_micro_batch_size_per_gpu": 2,
                "gradient_accumulation_steps": "auto",
            },
            (4, 2, 1),
        ),
    ],
)
def test_rules(world, given, expected):
    result = sizes(world, **given)
    assert isinstance(result, BatchSizes)
    assert (
        result.train_batch_size,
        result.micro_batch_size,
        result.gradient_accumulation_steps,
    ) == expected
    assert (
        result.train_batch_size
        == result.micro_batch_size * result.gradient_accumulation_steps * world
    )


def test_all_three_inconsistent_for_this_world_size_names_the_three_values():
    cfg = parse_config(
        {
            "train_batch_size": 32,
            "train_micro_batch_size_per_gpu": 4,
            "gradient_accumulation_steps": 4,
        }
    )
    assert cfg.resolve_batch_sizes(2).train_batch_size == 32
    with pytest.raises(ConfigError) as info:
        cfg.resolve_batch_sizes(4)
    text = str(info.value)
    for part in (
        "train_batch_size=32",
        "train_micro_batch_size_per_gpu=4",
        "gradient_accumulation_steps=4",
        "world_size=4",
    ):
        assert part in text


def test_train_not_divisible_by_micro_times_world():
    cfg = parse_config({"train_batch_size": 12, "train_micro_batch_size_per_gpu": 4})
    assert cfg.resolve_batch_sizes(3).gradient_accumulation_steps == 1
    with pytest.raises(ConfigError, match="inconsistent batch sizes"):
        cfg.resolve_batch_sizes(2)  # 12 / (4 * 2) is not an integer
    with pytest.raises(ConfigError, match="inconsistent batch sizes"):
        cfg.resolve_batch_sizes(4)  # 12 < 4 * 4


def test_inconsistent_for_every_world_size_is_caught_at_parse_time():
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "train_batch_size": 30,
                "train_micro_batch_size_per_gpu": 4,
                "gradient_accumulation_steps": 2,
            }
        )
    assert info.value.path == "train_batch_size"
    assert "train_micro_batch_size_per_gpu (4)" in str(info.value)
    assert "gradient_accumulation_steps (2)" in str(info.value)


def test_world_size_must_be_positive():
    with pytest.raises(ValueError, match="world_size"):
        parse_config({}).resolve_batch_sizes(0)
