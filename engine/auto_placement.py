"""Resolve ``"auto"`` offload devices with the planner (:mod:`tiermem.planning`) at initialize.

``zero_optimization.offload_param.device`` and/or
``offload_optimizer.device`` may be ``"auto"``: :func:`resolve_auto_placement`
describes the model (its parameter groups as the engine makes them, and
``model.config``'s hidden size, layers, sequence length and vocabulary when it
has them) and the machine (GPU memory, available host memory, free space
under ``nvme_path``, the last ``tiermem bench`` of that file system) to the
planner, and takes its recommendation: the fastest placement that fits, which
is the one offloading least. Nothing is measured here (initialize stays
quick); rates not saved by ``tiermem bench`` are the planner's assumed ones.

[Note: the planner is core code and knows nothing of the engine; this module
is the one adapter from the engine's config and module to its plain numbers.]
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from tiermem.engine.config_base import ConfigError
from tiermem.engine.settings import WHOLE_SHARD

__all__ = ["AUTO_DEVICE", "model_shape", "plan_placement", "resolve_auto_placement"]

AUTO_DEVICE = "auto"
logger = logging.getLogger("tiermem.engine")

_CONFIG_NAMES = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_layers", "num_hidden_layers", "n_layer"),
    "seq_len": ("seq_len", "max_position_embeddings", "n_positions"),
    "vocab_size": ("vocab_size",),
}


def _config_int(model: Any, names: tuple[str, ...]) -> int:
    cfg = getattr(model, "config", None)
    for name in names:
        value = getattr(cfg, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


def model_shape(model: Any):
    """The planner's :class:`~tiermem.planning.ModelShape` of ``model``."""
    from tiermem.engine.partition import plan_groups
    from tiermem.planning import ModelShape

    groups = tuple(sum(p.numel() for _, p in members) for _, members in plan_groups(model).members)
    groups = tuple(g for g in groups if g > 0) or (1,)
    dims = {key: _config_int(model, names) for key, names in _CONFIG_NAMES.items()}
    return ModelShape(name=type(model).__name__, num_params=sum(groups), groups=groups, **dims)


def _allowed(zero: Any) -> list:
    """The planner's placements this config allows (stage, the fixed side, nvme paths)."""
    from tiermem.planning import PLACEMENTS

    param, opt = zero.offload_param, zero.offload_optimizer
    out = []
    for p in PLACEMENTS:
        if param.device != AUTO_DEVICE and param.device != p.param_device:
            continue
        if opt.device != AUTO_DEVICE and opt.device != p.optimizer_device:
            continue
        if p.param_device != "none" and (zero.stage != 3 or param.nvme_path is None):
            continue
        if p.optimizer_device == "cpu" and zero.stage == 0:
            continue
        if p.optimizer_device == "nvme" and (zero.stage != 3 or opt.nvme_path is None):
            continue
        out.append(p)
    return out


def _ranks_per_host(world_size: int) -> int:
    """Ranks sharing this machine: torchrun's ``LOCAL_WORLD_SIZE``, else all of them."""
    try:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "") or world_size)
    except ValueError:
        local = world_size
    return max(1, min(local, world_size))


def plan_placement(
    cfg: Any,
    *,
    model: Any,
    world_size: int,
    micro_batch_size: int,
    gradient_accumulation_steps: int,
    dtype_bytes: int,
    placements: list,
):
    """The planner's :class:`~tiermem.planning.Plan` of ``placements`` for ``model`` under
    ``cfg``'s ZeRO knobs on this machine (nothing measured)."""
    from tiermem import planning

    zero = cfg.zero_optimization
    param, opt = zero.offload_param, zero.offload_optimizer
    paths = opt.nvme_path or param.nvme_path
    settings = planning.PlanSettings(
        world_size=world_size,
        ranks_per_host=_ranks_per_host(world_size),
        micro_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        dtype_bytes=dtype_bytes,
        pin_memory=bool(opt.pin_memory),
        param_buffer_count=param.buffer_count,
        optimizer_buffer_count=opt.buffer_count,
        sub_group_size=zero.sub_group_size or WHOLE_SHARD,
        sub_group_split_params=zero.sub_group_split_params,
        prefetch_bucket_size=int(zero.stage3_prefetch_bucket_size),
        param_persistence_threshold=int(zero.stage3_param_persistence_threshold),
        # the model exists already: its bytes are gone from the available memory
        model_built_on_host=False,
        placements=tuple(placements),
        state_dtype=cfg.optimizer.state_dtype if cfg.optimizer is not None else "fp32",
    )
    machine = planning.probe_machine(paths[0] if paths else None, measure=False)
    return planning.plan(model_shape(model), machine, settings)


def resolve_auto_placement(
    cfg: Any,
    *,
    model: Any,
    world_size: int,
    micro_batch_size: int,
    gradient_accumulation_steps: int,
    dtype_bytes: int,
) -> Any:
    """``cfg`` (a resolved :class:`~tiermem.engine.config.TiermemConfig`) with its
    ``"auto"`` offload devices replaced by the planner's choice; ``cfg`` itself when
    neither is ``"auto"``. Raises :class:`ConfigError` when there is no model to plan
    for, when the config allows no planned placement, or when none fits."""
    zero = cfg.zero_optimization
    param, opt = zero.offload_param, zero.offload_optimizer
    if AUTO_DEVICE not in (param.device, opt.device):
        return cfg
    where = (param if param.device == AUTO_DEVICE else opt).field_path("device")
    if model is None:
        raise ConfigError(
            '"auto" needs the model to plan for: tiermem.initialize resolves it '
            "(tiermem.init_context cannot; name the device there)",
            path=where,
        )
    allowed = _allowed(zero)
    if not allowed:
        raise ConfigError(
            f'"auto" has no placement to choose from with stage {zero.stage}, '
            f'offload_param.device "{param.device}", offload_optimizer.device "{opt.device}" '
            "(NVMe placements need stage 3 and nvme_path)",
            path=where,
        )
    result = plan_placement(
        cfg,
        model=model,
        world_size=world_size,
        micro_batch_size=micro_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps,
        dtype_bytes=dtype_bytes,
        placements=allowed,
    )
    chosen = result.recommended
    if chosen is None:
        reasons = "; ".join(
            f"{e.placement.value}: {', '.join(e.reasons)}" for e in result.estimates
        )
        raise ConfigError(f'"auto": no placement fits this machine ({reasons})', path=where)
    logger.info(
        'offload "auto": %s (offload_param %s, offload_optimizer %s; predicted step %.3g s)',
        chosen.placement.value,
        chosen.placement.param_device,
        chosen.placement.optimizer_device,
        chosen.seconds,
    )
    new_zero = dataclasses.replace(
        zero,
        offload_param=dataclasses.replace(param, device=chosen.placement.param_device),
        offload_optimizer=dataclasses.replace(opt, device=chosen.placement.optimizer_device),
    )
    return dataclasses.replace(cfg, zero_optimization=new_zero)
