"""nvme_path: required with device "nvme"; a string or a list (striped) becomes a tuple."""

import pytest

from tiermem.engine.config import ConfigError, parse_config


def zero(**offload):
    return {"zero_optimization": {"stage": 3, **offload}}


@pytest.mark.parametrize("section", ["offload_param", "offload_optimizer"])
def test_nvme_without_path_names_the_path(section):
    with pytest.raises(ConfigError) as info:
        parse_config(zero(**{section: {"device": "nvme"}}))
    assert info.value.path == f"zero_optimization.{section}.nvme_path"
    assert 'required when "device" is "nvme"' in str(info.value)


def test_single_path_string_becomes_one_tuple_entry():
    cfg = parse_config(zero(offload_param={"device": "nvme", "nvme_path": "/local_nvme"}))
    assert cfg.zero_optimization.offload_param.nvme_path == ("/local_nvme",)


def test_list_of_paths_is_striped_in_order():
    paths = ["/nvme0/swap", "/nvme1/swap", "/nvme2/swap"]
    cfg = parse_config(zero(offload_optimizer={"device": "nvme", "nvme_path": paths}))
    assert cfg.zero_optimization.offload_optimizer.nvme_path == tuple(paths)
    assert cfg.to_dict()["zero_optimization"]["offload_optimizer"]["nvme_path"] == paths


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([], "non-empty list"),
        (["/a", "/a"], "listed twice"),
        (["/a", ""], "a path"),
        ([1], "a path"),
    ],
)
def test_bad_path_lists(value, expected):
    with pytest.raises(ConfigError) as info:
        parse_config(zero(offload_param={"device": "nvme", "nvme_path": value}))
    assert info.value.path == "zero_optimization.offload_param.nvme_path"
    assert expected in str(info.value)


def test_path_without_nvme_device_is_kept():
    cfg = parse_config(zero(offload_param={"device": "cpu", "nvme_path": "/x"}))
    assert cfg.zero_optimization.offload_param.nvme_path == ("/x",)
