"""An ``nvme_path`` the checks cannot see is unusable until it is created (under
/proc, where mkdir fails with ENOENT even for root) is a ConfigError naming the
config key and the path, like every other bad path, not a bare FileNotFoundError."""

from __future__ import annotations

import os

import pytest
from torch import nn

import tiermem
from tiermem.engine.config import ConfigError

PARAM_KEY = "zero_optimization.offload_param.nvme_path"
OPT_KEY = "zero_optimization.offload_optimizer.nvme_path"


def _config(param_path: str, opt_path: str) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "nvme", "nvme_path": param_path},
            "offload_optimizer": {"device": "nvme", "nvme_path": opt_path},
        },
    }


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
@pytest.mark.parametrize("which", ["param", "optimizer"])
def test_path_under_proc_is_a_config_error_naming_the_key(tmp_path, which):
    bad = "/proc/tiermem-test-cannot-exist/swap"
    good = str(tmp_path / "good")
    args = (bad, good) if which == "param" else (good, bad)
    with pytest.raises(ConfigError) as info:
        tiermem.initialize(model=nn.Linear(4, 4), config=_config(*args))
    assert info.value.path == (PARAM_KEY if which == "param" else OPT_KEY)
    assert "/proc/tiermem-test-cannot-exist" in str(info.value)
    assert "cannot be created" in str(info.value)
