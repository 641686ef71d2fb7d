"""What the engine reads from the config, as small typed records; the one adapter from the config.

[Note: the parsed config (:mod:`tiermem.engine.config`) validates and names
bad keys; this module narrows it to what each engine component needs
(:class:`ZeroSettings`, :class:`~tiermem.engine.precision.PrecisionConfig`,
:class:`OptimizerSettings`), so :func:`engine_settings` is the only engine
code that knows the config's shape. The records have no defaults of their
own: every value comes from the config, whose sections
(:mod:`tiermem.engine.config_sections`) are the one place a default is
written.]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiermem.engine.precision import PrecisionConfig

__all__ = ["EngineSettings", "OptimizerSettings", "ZeroSettings", "engine_settings"]

#: ``sub_group_size`` 0: every shard is one optimizer sub-group
WHOLE_SHARD = 1 << 62


@dataclass(frozen=True, kw_only=True)
class OptimizerSettings:
    """The ``optimizer`` section: Adam or AdamW and its hyperparameters."""

    type: str
    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    adamw_mode: bool
    bias_correction: bool
    state_dtype: str  # how the moments are stored: tiermem.adam.STATE_DTYPES


@dataclass(frozen=True, kw_only=True)
class ZeroSettings:
    """The ``zero_optimization`` section, as the engine uses it."""

    stage: int
    offload_param: str
    offload_optimizer: str
    param_nvme_path: tuple[str, ...]
    optimizer_nvme_path: tuple[str, ...]
    pin_memory: bool
    param_buffer_count: int
    param_buffer_size: int
    optimizer_buffer_count: int
    sub_group_size: int
    sub_group_split_params: bool
    prefetch_bucket_size: int
    max_live_parameters: int
    param_persistence_threshold: int
    reduce_bucket_size: int
    overlap_comm: bool


@dataclass(frozen=True, kw_only=True)
class EngineSettings:
    """Everything the engine takes from the config."""

    train_batch_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int
    gradient_clipping: float
    optimizer: OptimizerSettings | None
    scheduler: Any
    precision: PrecisionConfig
    zero: ZeroSettings
    aio: Any
    cpu_checkpointing: bool
    raw: Any


def _model_facts(model: Any) -> tuple[int | None, Any]:
    """(hidden size, floating dtype) of a model, for the config's ``"auto"`` values."""
    if model is None:
        return None, None
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return (hidden if isinstance(hidden, int) and hidden > 0 else None), dtype


def engine_settings(config: Any, *, world_size: int, model: Any = None) -> EngineSettings:
    """Parse ``config`` (a dict, a JSON file path or a parsed config) into :class:`EngineSettings`.

    ``"auto"`` values are resolved from ``model`` (its ``config.hidden_size``
    and parameter dtype) and ``world_size``. Raises
    :class:`tiermem.engine.config.ConfigError` naming the key on bad input.
    """
    from tiermem.engine.config import parse_config

    hidden, dtype = _model_facts(model)
    cfg = parse_config(config).resolve_auto(
        world_size=world_size, hidden_size=hidden, model_dtype=dtype
    )
    sizes = cfg.resolve_batch_sizes(world_size)
    opt = None
    if cfg.optimizer is not None:
        o = cfg.optimizer
        opt = OptimizerSettings(
            type=o.type,
            lr=float(o.lr),
            betas=(float(o.betas[0]), float(o.betas[1])),
            eps=float(o.eps),
            weight_decay=float(o.weight_decay),
            adamw_mode=bool(o.adamw_mode),
            bias_correction=bool(o.bias_correction),
            state_dtype=o.state_dtype,
        )
    fp16 = cfg.fp16
    kind = "fp16" if fp16.enabled is True else "bf16" if cfg.bf16.enabled is True else "fp32"
    precision = PrecisionConfig(
        kind=kind,
        loss_scale=float(fp16.loss_scale),
        initial_scale_power=int(fp16.initial_scale_power),
        loss_scale_window=int(fp16.loss_scale_window),
        hysteresis=int(fp16.hysteresis),
        consecutive_hysteresis=bool(fp16.consecutive_hysteresis),
        min_loss_scale=float(fp16.min_loss_scale),
    )
    from tiermem.engine.auto_placement import resolve_auto_placement

    cfg = resolve_auto_placement(  # "auto" offload devices: the planner's choice
        cfg,
        model=model,
        world_size=world_size,
        micro_batch_size=sizes.micro_batch_size,
        gradient_accumulation_steps=sizes.gradient_accumulation_steps,
        dtype_bytes=4 if kind == "fp32" else 2,
    )
    z = cfg.zero_optimization
    op, oo = z.offload_param, z.offload_optimizer
    zero = ZeroSettings(
        stage=z.stage,
        offload_param=op.device,
        offload_optimizer=oo.device,
        param_nvme_path=tuple(op.nvme_path or ()),
        optimizer_nvme_path=tuple(oo.nvme_path or ()),
        pin_memory=bool(oo.pin_memory if oo.device != "none" else op.pin_memory),
        param_buffer_count=op.buffer_count,
        param_buffer_size=op.buffer_size,
        optimizer_buffer_count=oo.buffer_count,
        # [Note: DeepSpeed's sub_group_size 0 makes each parameter a sub-group of its
        #  own; tiermem keeps integ's meaning, "no bound": a module group's whole
        #  shard is one sub-group (whole parameters, so split_params has nothing to cut).]
        sub_group_size=z.sub_group_size or WHOLE_SHARD,
        sub_group_split_params=z.sub_group_split_params,
        prefetch_bucket_size=int(z.stage3_prefetch_bucket_size),
        max_live_parameters=z.stage3_max_live_parameters,
        param_persistence_threshold=int(z.stage3_param_persistence_threshold),
        reduce_bucket_size=int(z.reduce_bucket_size),
        overlap_comm=bool(z.overlap_comm),
    )
    return EngineSettings(
        train_batch_size=sizes.train_batch_size,
        micro_batch_size=sizes.micro_batch_size,
        gradient_accumulation_steps=sizes.gradient_accumulation_steps,
        gradient_clipping=float(cfg.gradient_clipping),
        optimizer=opt,
        scheduler=cfg.scheduler,
        precision=precision,
        zero=zero,
        aio=cfg.aio.to_aio_config(),
        cpu_checkpointing=bool(cfg.activation_checkpointing.cpu_checkpointing),
        raw=cfg,
    )
