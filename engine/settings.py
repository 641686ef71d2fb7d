"""What the engine reads from the config, as small typed records; the one adapter from the config.

[Note: every component gets only its own record (:class:`ZeroSettings`,
:class:`~tiermem.engine.precision.PrecisionConfig`, :class:`OptimizerSettings`);
:func:`engine_settings` is the only place that knows the config's shape.]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from tiermem.engine.precision import PrecisionConfig

__all__ = ["EngineSettings", "OptimizerSettings", "ZeroSettings", "engine_settings"]


@dataclass(frozen=True, kw_only=True)
class OptimizerSettings:
    """The ``optimizer`` section: Adam or AdamW and its hyperparameters."""

    type: str = "AdamW"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    adamw_mode: bool = True
    bias_correction: bool = True


@dataclass(frozen=True, kw_only=True)
class ZeroSettings:
    """The ``zero_optimization`` section, as the engine uses it."""

    stage: int = 0
    offload_param: str = "none"
    offload_optimizer: str = "none"
    param_nvme_path: tuple[str, ...] = ()
    optimizer_nvme_path: tuple[str, ...] = ()
    pin_memory: bool = True
    buffer_count: int = 5
    sub_group_size: int = 1_000_000_000
    prefetch_bucket_size: int = 50_000_000
    max_live_parameters: int = 1_000_000_000
    param_persistence_threshold: int = 100_000
    reduce_bucket_size: int = 500_000_000
    overlap_comm: bool = True


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """Everything the engine takes from the config."""

    train_batch_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_clipping: float = 0.0
    optimizer: OptimizerSettings | None = None
    scheduler: Any = None
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    zero: ZeroSettings = field(default_factory=ZeroSettings)
    aio: Any = None
    raw: Any = None


def _load(config: Any) -> dict:
    if config is None:
        return {}
    if isinstance(config, (str, os.PathLike)):
        with open(config, encoding="utf-8") as fh:
            return json.load(fh)
    if isinstance(config, dict):
        return config
    raise TypeError(f"config must be a dict or a path to a JSON file, not {type(config).__name__}")


def _batch_sizes(raw: dict, world_size: int) -> tuple[int, int, int]:
    train = raw.get("train_batch_size")
    micro = raw.get("train_micro_batch_size_per_gpu")
    gas = raw.get("gradient_accumulation_steps")
    if train is not None and micro is not None and gas is not None:
        pass
    elif train is not None and micro is not None:
        gas = train // (micro * world_size)
    elif train is not None and gas is not None:
        micro = train // (gas * world_size)
    elif micro is not None:
        gas = gas or 1
        train = micro * gas * world_size
    elif train is not None:
        gas = 1
        micro = train // world_size
    else:
        micro, gas = 1, gas or 1
        train = micro * gas * world_size
    if train != micro * gas * world_size or min(train, micro, gas) < 1:
        raise ValueError(
            f"inconsistent batch sizes: train_batch_size {train} != "
            f"train_micro_batch_size_per_gpu {micro} x gradient_accumulation_steps {gas} "
            f"x world size {world_size}"
        )
    return int(train), int(micro), int(gas)


def _paths(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


def _from_dict(raw: dict, world_size: int) -> EngineSettings:
    train, micro, gas = _batch_sizes(raw, world_size)
    opt = None
    if raw.get("optimizer"):
        sec = raw["optimizer"]
        params = dict(sec.get("params") or {})
        kind = str(sec.get("type", "AdamW"))
        if kind.lower() not in ("adam", "adamw"):
            raise ValueError(f"optimizer.type: expected 'Adam' or 'AdamW', got {kind!r}")
        opt = OptimizerSettings(
            type="AdamW" if kind.lower() == "adamw" else "Adam",
            lr=float(params.get("lr", 1e-3)),
            betas=tuple(float(b) for b in params.get("betas", (0.9, 0.999))),
            eps=float(params.get("eps", 1e-8)),
            weight_decay=float(params.get("weight_decay", 0.0)),
            adamw_mode=bool(params.get("adam_w_mode", True)) or kind.lower() == "adamw",
            bias_correction=bool(params.get("bias_correction", True)),
        )
    fp16, bf16 = raw.get("fp16") or {}, raw.get("bf16") or {}
    if fp16.get("enabled") and bf16.get("enabled"):
        raise ValueError("fp16.enabled and bf16.enabled cannot both be true")
    kind = "fp16" if fp16.get("enabled") else "bf16" if bf16.get("enabled") else "fp32"
    precision = PrecisionConfig(
        kind=kind,
        loss_scale=float(fp16.get("loss_scale", 0.0)),
        initial_scale_power=int(fp16.get("initial_scale_power", 16)),
        loss_scale_window=int(fp16.get("loss_scale_window", 1000)),
        hysteresis=int(fp16.get("hysteresis", 2)),
        min_loss_scale=float(fp16.get("min_loss_scale", 1.0)),
    )
    z = raw.get("zero_optimization") or {}
    op, oo = z.get("offload_param") or {}, z.get("offload_optimizer") or {}
    stage = int(z.get("stage", 0))
    zero = ZeroSettings(
        stage=stage,
        offload_param=str(op.get("device", "none")).lower(),
        offload_optimizer=str(oo.get("device", "none")).lower(),
        param_nvme_path=_paths(op.get("nvme_path")),
        optimizer_nvme_path=_paths(oo.get("nvme_path")),
        pin_memory=bool(oo.get("pin_memory", op.get("pin_memory", True))),
        buffer_count=int(op.get("buffer_count", 5)),
        sub_group_size=int(z.get("sub_group_size", 1_000_000_000)),
        prefetch_bucket_size=int(z.get("stage3_prefetch_bucket_size", 50_000_000)),
        max_live_parameters=int(z.get("stage3_max_live_parameters", 1_000_000_000)),
        param_persistence_threshold=int(z.get("stage3_param_persistence_threshold", 100_000)),
        reduce_bucket_size=int(z.get("reduce_bucket_size", 500_000_000)),
        overlap_comm=bool(z.get("overlap_comm", stage == 3)),
    )
    return EngineSettings(
        train_batch_size=train,
        micro_batch_size=micro,
        gradient_accumulation_steps=gas,
        gradient_clipping=float(raw.get("gradient_clipping", 0.0)),
        optimizer=opt,
        scheduler=raw.get("scheduler"),
        precision=precision,
        zero=zero,
        aio=raw.get("aio"),
        raw=raw,
    )


def engine_settings(config: Any, *, world_size: int) -> EngineSettings:
    """Read ``config`` (a dict or a JSON file path) into :class:`EngineSettings`."""
    settings = _from_dict(_load(config), world_size)
    z = settings.zero
    if z.stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_optimization.stage: expected 0, 1, 2 or 3, got {z.stage}")
    for name in ("offload_param", "offload_optimizer"):
        device = getattr(z, name)
        if device not in ("none", "cpu", "nvme"):
            raise ValueError(
                f"zero_optimization.{name}.device: expected none, cpu or nvme, got {device!r}"
            )
    if z.offload_param != "none" and z.stage != 3:
        raise ValueError("zero_optimization.offload_param needs stage 3")
    if z.offload_optimizer != "none" and z.stage == 0:
        raise ValueError("zero_optimization.offload_optimizer needs stage 1, 2 or 3")
    return settings
