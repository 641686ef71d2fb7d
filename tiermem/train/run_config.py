"""The engine config of a ``tiermem train`` run: the built-in default, or the user's JSON completed.

The default is ZeRO stage 3 with parameters and optimizer states offloaded to
NVMe in the run's scratch directory, AdamW with a warmup-cosine schedule over
the run's steps, and fp32 (bf16 where a GPU supports it).

A user's config (``--config``) is checked as given first, so an error names
the file and the key. Then what a training run cannot do without is filled
in where the file leaves it out: batch sizes, the optimizer, the scheduler's
``"auto"`` step counts, and ``nvme_path`` of an ``nvme`` offload (the scratch
directory). ``--nvme-path`` replaces the file's ``nvme_path``.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tiermem.engine.config import ConfigError, ConfigWarning, TiermemConfig, parse_config

__all__ = ["RunShape", "build_run_config", "default_config"]


@dataclass(frozen=True, kw_only=True)
class RunShape:
    """What the default config depends on.

    Attributes:
        steps: optimizer steps of the whole run (the schedule's length).
        micro_batch_size: sequences per micro-batch of one rank, where neither
            ``batch_size`` nor the config file sets a batch size.
        lr: peak learning rate.
        scratch: the directory the NVMe offload writes to.
        hidden_size: the model's width (for the prefetch window).
        batch_size: sequences per optimizer step over all ranks
            (``train_batch_size``; replaces the config file's); None: not set.
        accumulation: ``gradient_accumulation_steps`` (replaces the config
            file's); None: not set.
    """

    steps: int
    micro_batch_size: int
    lr: float
    scratch: Path
    hidden_size: int
    batch_size: int | None = None
    accumulation: int | None = None


def _bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _scheduler(steps: int) -> dict[str, Any]:
    return {
        "type": "WarmupCosineLR",
        "params": {
            "warmup_num_steps": max(2, min(100, steps // 10)),
            "total_num_steps": max(1, steps),
            "warmup_type": "linear",
            "warmup_min_ratio": 0.0,
            "cos_min_ratio": 0.1,
        },
    }


def _optimizer(lr: float) -> dict[str, Any]:
    return {
        "type": "AdamW",
        "params": {"lr": lr, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1},
    }


def default_config(shape: RunShape) -> dict[str, Any]:
    """The config ``tiermem train`` uses without ``--config`` (a DeepSpeed-style dict)."""
    scratch = os.fspath(shape.scratch)
    # [Note: every parameter group goes through the store (persistence
    #  threshold 0) and the buffer counts are DeepSpeed's defaults, so the
    #  store's host budget holds a fraction of the model's state and each step
    #  really reads and writes the swap files, which is what the run shows.]
    return {
        **_batch_sizes(shape, {}),
        "gradient_clipping": 1.0,
        "optimizer": _optimizer(shape.lr),
        "scheduler": _scheduler(shape.steps),
        "bf16": {"enabled": _bf16_ok()},
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,
            "stage3_prefetch_bucket_size": 2 * shape.hidden_size * shape.hidden_size,
            "offload_param": {"device": "nvme", "nvme_path": scratch},
            "offload_optimizer": {"device": "nvme", "nvme_path": scratch},
        },
    }


_BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def _batch_sizes(shape: RunShape, given: dict[str, Any]) -> dict[str, Any]:
    """The batch keys of the run: ``given`` (a config file's) with the command line's
    ``batch_size`` and ``accumulation`` over them.

    [Note: with N ranks the engine resolves these by DeepSpeed's rule
    ``train_batch_size = micro x accumulation x N``. ``--batch-size`` sets the
    global batch, so the micro-batch per rank shrinks as ranks are added and
    the loss curve stays that of one process; without it the micro-batch per
    rank is fixed and the global batch grows with the ranks, as in DeepSpeed.]
    """
    out = {k: given[k] for k in _BATCH_KEYS if k in given}
    if shape.batch_size is not None:
        out["train_batch_size"] = shape.batch_size
    if shape.accumulation is not None:
        out["gradient_accumulation_steps"] = shape.accumulation
    if not any(k in out for k in _BATCH_KEYS[:2]):
        out["train_micro_batch_size_per_gpu"] = shape.micro_batch_size
    return out


def _load_user_json(path: Path) -> dict[str, Any]:
    # the file parsed in _check_as_given, so it is readable JSON and an object
    with open(path, encoding="utf-8-sig") as handle:
        return json.load(handle)


def _complete(raw: dict[str, Any], shape: RunShape, *, nvme_override: bool) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    batch = _batch_sizes(shape, out)
    for key in _BATCH_KEYS:
        out.pop(key, None)
    out.update(batch)
    if out.get("optimizer") is None:
        out["optimizer"] = _optimizer(shape.lr)
    scheduler = out.get("scheduler")
    if isinstance(scheduler, dict) and isinstance(scheduler.get("params"), dict):
        params = scheduler["params"]
        defaults = _scheduler(shape.steps)["params"]
        for key in ("warmup_num_steps", "total_num_steps"):
            if params.get(key) == "auto":
                params[key] = defaults[key]
    zero = out.get("zero_optimization")
    if isinstance(zero, dict):
        for section in ("offload_param", "offload_optimizer"):
            sub = zero.get(section)
            if isinstance(sub, dict) and sub.get("device") == "nvme":
                if nvme_override or not sub.get("nvme_path"):
                    sub["nvme_path"] = os.fspath(shape.scratch)
    return out


def build_run_config(
    shape: RunShape, *, config_file: Path | None = None, nvme_override: bool = False
) -> TiermemConfig:
    """The parsed config of the run: :func:`default_config`, or ``config_file`` completed.

    Raises:
        ConfigError: the file is missing, not JSON, or has a bad key (named,
            with the file).
    """
    if config_file is None:
        return parse_config(default_config(shape))
    _check_as_given(config_file)
    raw = _load_user_json(config_file)
    try:
        return parse_config(_complete(raw, shape, nvme_override=nvme_override))
    except ConfigError as err:
        raise err.with_file(os.fspath(config_file)) from None


def _check_as_given(config_file: Path) -> None:
    """Parse the file as it is, so errors name its keys; a missing ``nvme_path``
    of an ``nvme`` offload is no error here (the run fills it in)."""
    try:
        with warnings.catch_warnings():  # ignored-key warnings come once, from the final parse
            warnings.simplefilter("ignore", ConfigWarning)
            parse_config(os.fspath(config_file))
    except ConfigError as err:
        if not (err.path or "").endswith("nvme_path"):
            raise
