"""The run's config: the NVMe default, and a user's file completed where it leaves things out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tiermem.engine.config import ConfigError
from tiermem.train.run_config import RunShape, build_run_config

SHAPE = RunShape(steps=50, micro_batch_size=4, lr=1e-3, scratch=Path("/scratch"), hidden_size=64)


def test_default_offloads_params_and_optimizer_to_the_scratch_dir():
    cfg = build_run_config(SHAPE)
    z = cfg.zero_optimization
    assert z.stage == 3
    assert (z.offload_param.device, z.offload_optimizer.device) == ("nvme", "nvme")
    assert z.offload_param.nvme_path == ("/scratch",) == z.offload_optimizer.nvme_path
    assert cfg.train_micro_batch_size_per_gpu == 4
    assert cfg.scheduler.params.total_num_steps == 50


def _write(tmp_path, doc) -> Path:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(doc))
    return path


def test_user_file_is_completed(tmp_path):
    doc = {
        "train_batch_size": 8,
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "nvme"},
            "offload_optimizer": {"device": "cpu"},
        },
        "scheduler": {"type": "WarmupLR", "params": {"warmup_num_steps": "auto"}},
    }
    cfg = build_run_config(SHAPE, config_file=_write(tmp_path, doc))
    assert cfg.train_batch_size == 8 and cfg.train_micro_batch_size_per_gpu is None
    assert cfg.optimizer.type == "AdamW" and cfg.optimizer.lr == 1e-3  # filled in
    assert cfg.zero_optimization.offload_param.nvme_path == ("/scratch",)
    assert cfg.zero_optimization.offload_optimizer.device == "cpu"
    assert cfg.scheduler.params.warmup_num_steps == 5  # "auto": a tenth of the run


def test_given_nvme_path_is_kept_unless_overridden(tmp_path):
    doc = {
        "zero_optimization": {"stage": 3, "offload_param": {"device": "nvme", "nvme_path": "/x"}}
    }
    path = _write(tmp_path, doc)
    kept = build_run_config(SHAPE, config_file=path)
    assert kept.zero_optimization.offload_param.nvme_path == ("/x",)
    replaced = build_run_config(SHAPE, config_file=path, nvme_override=True)
    assert replaced.zero_optimization.offload_param.nvme_path == ("/scratch",)


def test_errors_name_file_and_key(tmp_path):
    path = _write(tmp_path, {"gradient_clipping": -1})
    with pytest.raises(ConfigError) as err:
        build_run_config(SHAPE, config_file=path)
    assert err.value.path == "gradient_clipping" and str(path) in str(err.value)
