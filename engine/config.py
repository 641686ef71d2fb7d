"""The DeepSpeed-style JSON config of the tiermem engine: parsed once, validated, typed.

Example::

    from tiermem.engine.config import parse_config

    cfg = parse_config("ds_config.json")      # or a dict
    sizes = cfg.resolve_batch_sizes(world_size=2)
    cfg.zero_optimization.offload_param.nvme_path   # ("/nvme0", "/nvme1"): striped
    cfg.aio.to_aio_config()                         # tiermem.aio.AioConfig

Every key, its default and meaning is documented in ``docs/config.md``. Bad
input raises :class:`ConfigError` naming the key's dotted path (and the file),
what was expected and, for an unknown key, the nearest valid one. DeepSpeed
keys that tiermem does not act on (monitoring, profiling, communication
tuning...) are accepted with one :class:`ConfigWarning` listing them; any
other unknown key is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from tiermem.engine.config_base import (
    AUTO,
    Auto,
    ConfigError,
    ConfigWarning,
    ParseContext,
    Section,
    collect_keys,
    expect_mapping,
    parse_section,
    setting,
)
from tiermem.engine.config_sections import (
    ActivationCheckpointingConfig,
    AioSectionConfig,
    BF16Config,
    FP16Config,
    OffloadConfig,
    OffloadOptimizerConfig,
    OptimizerConfig,
    SchedulerConfig,
    SchedulerParams,
    WarmupCosineLRParams,
    WarmupDecayLRParams,
    WarmupLRParams,
    ZeroConfig,
)

_MONITORING = "logging/monitoring is not wired into tiermem"
_DS_POLICY = "a DeepSpeed engine policy with no tiermem equivalent"
_COMM = "a communication tuning knob tiermem does not have"
_FEATURE = "a DeepSpeed feature tiermem does not implement"

#: DeepSpeed top-level keys accepted and ignored (with one ConfigWarning), name -> why.
TOP_LEVEL_IGNORED: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "comms_logger",
            "flops_profiler",
            "tensorboard",
            "wandb",
            "csv_monitor",
            "comet",
            "aim",
            "memory_breakdown",
            "log_level",
            "dump_state",
            "timers",
        ),
        _MONITORING,
    ),
    **dict.fromkeys(
        (
            "zero_allow_untested_optimizer",
            "zero_force_ds_cpu_optimizer",
            "dataloader_drop_last",
            "checkpoint",
            "data_types",
            "disable_python_gc",
            "autotuning",
            "compile",
            "vocabulary_size",
            "allgather_size",
            "managed_gradient_accumulation",
            "use_data_before_expert_parallel_",
        ),
        _DS_POLICY,
    ),
    **dict.fromkeys(
        (
            "prescale_gradients",
            "gradient_predivide_factor",
            "communication_data_type",
            "seq_parallel_communication_data_type",
            "gradient_allreduce_op",
            "disable_allgather",
            "sparse_gradients",
        ),
        _COMM,
    ),
    **dict.fromkeys(
        (
            "pipeline",
            "hybrid_engine",
            "data_efficiency",
            "curriculum_learning",
            "progressive_layer_drop",
            "elasticity",
            "tensor_parallel",
            "sequence_parallel_size",
            "weight_quantization",
            "compression_training",
            "quantize_training",
            "eigenvalue",
            "sparse_attention",
            "nebula",
            "datastates",
            "graph_harvesting",
            "torch_autocast",
            "expert_parallel",
            "zenflow",
        ),
        _FEATURE,
    ),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatchSizes:
    """Resolved batch sizes: ``train_batch_size == micro_batch_size *
    gradient_accumulation_steps * world_size``."""

    train_batch_size: int
    micro_batch_size: int
    gradient_accumulation_steps: int


@dataclasses.dataclass(frozen=True, kw_only=True)
class TiermemConfig(Section):
    """The whole parsed config. Build it with :func:`parse_config`.

    Batch sizes keep what the JSON said (an int, :data:`AUTO`, or None when
    absent); :meth:`resolve_batch_sizes` applies DeepSpeed's rules.
    ``ignored_keys`` lists the dotted paths of DeepSpeed keys that were
    accepted but are not acted on.
    """

    PATH: ClassVar[str] = ""
    ALIASES: ClassVar[Mapping[str, str]] = {"bfloat16": "bf16"}
    IGNORED: ClassVar[Mapping[str, str]] = TOP_LEVEL_IGNORED
    UNKNOWN_WARNS: ClassVar[bool] = True
    REPLACED: ClassVar[Mapping[str, str]] = {
        "amp": 'NVIDIA Apex AMP is not supported; use "bf16" or "fp16"',
    }

    train_batch_size: int | Auto | None = setting(None, kind="int", lo=1, auto=True, nullable=True)
    train_micro_batch_size_per_gpu: int | Auto | None = setting(
        None, kind="int", lo=1, auto=True, nullable=True
    )
    gradient_accumulation_steps: int | Auto | None = setting(
        None, kind="int", lo=1, auto=True, nullable=True
    )
    gradient_clipping: float | Auto = setting(0.0, kind="float", lo=0.0, auto=True)
    steps_per_print: int | None = setting(None, kind="int", lo=1, nullable=True)
    wall_clock_breakdown: bool = setting(False, kind="bool")
    seed: int | None = setting(None, kind="int", lo=0, hi=2**64 - 1, nullable=True)
    optimizer: OptimizerConfig | None = setting(
        None, kind="section", section=OptimizerConfig, nullable=True
    )
    scheduler: SchedulerConfig | None = setting(
        None, kind="section", section=SchedulerConfig, nullable=True
    )
    fp16: FP16Config = setting(kind="section", section=FP16Config)
    bf16: BF16Config = setting(kind="section", section=BF16Config)
    zero_optimization: ZeroConfig = setting(kind="section", section=ZeroConfig)
    aio: AioSectionConfig = setting(kind="section", section=AioSectionConfig)
    activation_checkpointing: ActivationCheckpointingConfig = setting(
        kind="section", section=ActivationCheckpointingConfig
    )
    ignored_keys: tuple[str, ...] = dataclasses.field(default=(), compare=False)

    def _check(self) -> None:
        if self.fp16.enabled is True and self.bf16.enabled is True:
            raise ConfigError('"fp16" and "bf16" cannot both be enabled', path="bf16.enabled")
        tb = _given(self.train_batch_size)
        mb = _given(self.train_micro_batch_size_per_gpu)
        gas = _given(self.gradient_accumulation_steps)
        # [Note: the world size is unknown here, but some combinations are
        #  inconsistent for every world size; say so at parse time.]
        factors = [
            (name, value)
            for name, value in (
                ("train_micro_batch_size_per_gpu", mb),
                ("gradient_accumulation_steps", gas),
            )
            if value is not None
        ]
        per_rank = (mb or 1) * (gas or 1)
        if tb is not None and factors and tb % per_rank:
            product = " * ".join(f"{name} ({value})" for name, value in factors)
            raise ConfigError(
                f"inconsistent batch sizes: train_batch_size ({tb}) must equal {product} "
                "* world_size, and it is not a multiple of "
                f"{per_rank} for any world size",
                path="train_batch_size",
            )

    def resolve_batch_sizes(self, world_size: int) -> BatchSizes:
        """DeepSpeed's batch-size rules for ``world_size`` data-parallel ranks.

        Any two of train_batch_size, train_micro_batch_size_per_gpu and
        gradient_accumulation_steps determine the third; one alone sets the
        other to give gradient accumulation 1 (micro batch 1 when only
        gradient_accumulation_steps is given); none gives micro batch 1 and
        accumulation 1. ``"auto"`` counts as not given. The result must
        satisfy ``train = micro * accumulation * world_size``.

        Raises:
            ConfigError: the values are inconsistent (naming all three).
        """
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size: expected a positive integer, got {world_size!r}")
        tb = _given(self.train_batch_size)
        mb = _given(self.train_micro_batch_size_per_gpu)
        gas = _given(self.gradient_accumulation_steps)
        if tb is not None and mb is not None and gas is None:
            gas = tb // (mb * world_size)
        elif tb is not None and gas is not None and mb is None:
            mb = tb // (gas * world_size)
        elif tb is not None and mb is None and gas is None:
            gas = 1
            mb = tb // world_size
        else:
            mb = 1 if mb is None else mb
            gas = 1 if gas is None else gas
            tb = mb * gas * world_size if tb is None else tb
        if mb < 1 or gas < 1 or tb != mb * gas * world_size:
            raise ConfigError(
                "inconsistent batch sizes: train_batch_size must equal "
                "train_micro_batch_size_per_gpu * gradient_accumulation_steps * world_size, got "
                f"train_batch_size={_show(self.train_batch_size)}, "
                f"train_micro_batch_size_per_gpu={_show(self.train_micro_batch_size_per_gpu)}, "
                f"gradient_accumulation_steps={_show(self.gradient_accumulation_steps)}, "
                f"world_size={world_size}",
                path="train_batch_size",
            )
        return BatchSizes(train_batch_size=tb, micro_batch_size=mb, gradient_accumulation_steps=gas)

    def resolve_auto(
        self, *, world_size: int, hidden_size: int | None = None, model_dtype: Any = None
    ) -> TiermemConfig:
        """A copy with every ``"auto"`` outside ``scheduler`` replaced (docs/config.md, "auto").

        Batch sizes by :meth:`resolve_batch_sizes`; ZeRO bucket sizes from
        ``hidden_size`` (:meth:`ZeroConfig.resolve_auto`); ``fp16``/``bf16``
        ``enabled`` from the model's floating-point dtype (``model_dtype``,
        e.g. ``torch.bfloat16``); ``gradient_clipping`` and optimizer
        hyper-parameters from Hugging Face's defaults, with a
        :class:`ConfigWarning` naming them since nothing derives them.
        Scheduler ``"auto"`` values are resolved by ``build_lr_scheduler``.
        """
        import warnings

        import torch

        sizes = self.resolve_batch_sizes(world_size)
        defaulted = []
        clipping = self.gradient_clipping
        if clipping is AUTO:
            clipping = 1.0
            defaulted.append("gradient_clipping=1.0")
        optimizer = self.optimizer
        if optimizer is not None:
            resolved = optimizer.resolve_auto()
            for name in ("lr", "betas", "eps", "weight_decay"):
                if getattr(optimizer, name) is AUTO:
                    defaulted.append(f"optimizer.params.{name}={getattr(resolved, name)!r}")
            optimizer = resolved
        fp16, bf16 = self.fp16, self.bf16
        if fp16.enabled is AUTO:
            fp16 = dataclasses.replace(fp16, enabled=model_dtype == torch.float16)
        if bf16.enabled is AUTO:
            bf16 = dataclasses.replace(bf16, enabled=model_dtype == torch.bfloat16)
        if defaulted:
            warnings.warn(
                '"auto" values with nothing to derive them from were set to Hugging Face '
                "defaults: " + ", ".join(defaulted),
                ConfigWarning,
                stacklevel=2,
            )
        return dataclasses.replace(
            self,
            train_batch_size=sizes.train_batch_size,
            train_micro_batch_size_per_gpu=sizes.micro_batch_size,
            gradient_accumulation_steps=sizes.gradient_accumulation_steps,
            gradient_clipping=clipping,
            optimizer=optimizer,
            fp16=fp16,
            bf16=bf16,
            zero_optimization=self.zero_optimization.resolve_auto(hidden_size),
        )


def _given(value: Any) -> int | None:
    return None if value is None or value is AUTO else value


def _show(value: Any) -> str:
    if value is AUTO:
        return '"auto"'
    return "unset" if value is None else str(value)


@functools.cache
def all_key_paths() -> tuple[str, ...]:
    """Every valid dotted key path of the config (for "did you mean" hints)."""
    return tuple(TiermemConfig.key_paths(""))


def parse_config(config: Any) -> TiermemConfig:
    """Parse and validate a DeepSpeed-style config.

    Args:
        config: a dict (the JSON object), a path (str or PathLike) to a JSON
            file, an already parsed :class:`TiermemConfig` (returned as is), or
            None (all defaults).

    Raises:
        ConfigError: the config is invalid; the message names the dotted key
            path, the file when there is one, and what was expected.
    """
    if isinstance(config, TiermemConfig):
        return config
    if config is None:
        return _parse_dict({})
    if isinstance(config, str | os.PathLike):
        file = os.fspath(config)
        raw = load_json(file)
        try:
            return _parse_dict(raw)
        except ConfigError as err:
            raise err.with_file(file) from None
    if isinstance(config, Mapping):
        return _parse_dict(config)
    raise ConfigError(
        f"expected a dict, a path to a JSON file or a TiermemConfig, got {type(config).__name__}"
    )


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(file: str) -> Any:
    """The JSON config ``file``, parsed (duplicate keys and NaN refused); a
    :class:`ConfigError` naming the file when it cannot be read or parsed."""
    try:
        with open(file, encoding="utf-8-sig") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise ConfigError("config file not found", file=file) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a JSON config file", file=file) from None
    except PermissionError:
        raise ConfigError("permission denied reading the config file", file=file) from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"not UTF-8 text ({err.reason} at byte {err.start})", file=file) from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}", file=file
        ) from None
    except _DuplicateKey as err:
        raise ConfigError(f'invalid config: key "{err.args[0]}" appears twice', file=file) from None
    except ValueError as err:
        raise ConfigError(f"invalid JSON: {err}", file=file) from None


def _parse_dict(raw: Any) -> TiermemConfig:
    ctx = ParseContext(key_index=all_key_paths())
    raw = expect_mapping(raw, "")
    values = collect_keys(TiermemConfig, raw, "", ctx)
    for name, spec in TiermemConfig.json_fields().items():
        if spec.kind != "section" or name not in values:
            continue
        value = values[name]
        if name == "zero_optimization" and isinstance(value, bool):
            # DeepSpeed's oldest form, still read: true is stage 1, false stage 0
            value = {"stage": 1 if value else 0}
            warnings.warn(
                f'"zero_optimization": {str(values[name]).lower()} is deprecated; read as '
                f'{{"stage": {value["stage"]}}}, as DeepSpeed reads it',
                ConfigWarning,
                stacklevel=3,
            )
        if name == "optimizer":
            values[name] = None if value is None else OptimizerConfig.parse(value, ctx)
        elif name == "scheduler":
            values[name] = None if value is None else SchedulerConfig.parse(value, ctx)
        else:
            assert spec.section is not None
            # errors name the section as the file spells it ("bfloat16" or "bf16")
            spelt = next(
                (k for k, v in TiermemConfig.ALIASES.items() if v == name and k in raw), name
            )
            values[name] = parse_section(spec.section, value, spelt, ctx)
    aio = values.get("aio")
    if isinstance(aio, AioSectionConfig) and aio.use_gds:
        ctx.ignored.append(("aio.use_gds", "GPUDirect Storage is not supported"))
    cfg = TiermemConfig(**values, ignored_keys=tuple(path for path, _ in ctx.ignored))
    ctx.warn_ignored()
    return cfg


__all__ = [
    "AUTO",
    "ActivationCheckpointingConfig",
    "AioSectionConfig",
    "Auto",
    "BF16Config",
    "BatchSizes",
    "ConfigError",
    "ConfigWarning",
    "FP16Config",
    "OffloadConfig",
    "OffloadOptimizerConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "SchedulerParams",
    "TOP_LEVEL_IGNORED",
    "TiermemConfig",
    "WarmupCosineLRParams",
    "WarmupDecayLRParams",
    "WarmupLRParams",
    "ZeroConfig",
    "all_key_paths",
    "load_json",
    "parse_config",
]
