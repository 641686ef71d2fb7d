"""The sections of the DeepSpeed-style config, one keyword-only frozen dataclass each.

Each engine component receives only its own section. Defaults follow
DeepSpeed's (``deepspeed/runtime/zero/config.py``, ``offload_config.py``,
``precision_config.py``, ``swap_tensor/constants.py``, activation
checkpointing config); every key, its default and meaning is documented in
``docs/config.md``. Fields that accept ``"auto"`` hold :data:`AUTO` after
parsing and are resolved by the engine (see ``TiermemConfig.resolve_auto``).
"""

from __future__ import annotations

import dataclasses
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
    check_required,
    collect_keys,
    expect_mapping,
    join_path,
    setting,
    unknown_key_error,
)

OFFLOAD_DEVICES = ("none", "cpu", "nvme")
_GIB = 1 << 30

# ----------------------------------------------------------------------------- offload


@dataclasses.dataclass(frozen=True, kw_only=True)
class OffloadConfig(Section):
    """``zero_optimization.offload_param``: where stage 3 keeps parameters.

    ``nvme_path`` is always a tuple: a JSON string gives one path, a list
    gives several that the store stripes across.
    """

    PATH: ClassVar[str] = "zero_optimization.offload_param"
    LAX: ClassVar[bool] = True  # DeepSpeed: a pydantic model

    # "auto": the planner chooses at initialize (tiermem.engine.auto_placement)
    device: str = setting("none", kind="choice", choices=(*OFFLOAD_DEVICES, "auto"), fold_case=True)
    nvme_path: tuple[str, ...] | None = setting(None, kind="paths", nullable=True)
    pin_memory: bool = setting(False, kind="bool")
    buffer_count: int = setting(5, kind="int", lo=0)
    buffer_size: int = setting(100_000_000, kind="int", lo=0)
    max_in_cpu: int = setting(1_000_000_000, kind="int", lo=0)

    def _check(self) -> None:
        if self.device == "nvme" and self.nvme_path is None:
            raise self.error(
                "nvme_path",
                'required when "device" is "nvme": a directory on the NVMe drive, '
                "or a list of directories to stripe across",
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class OffloadOptimizerConfig(OffloadConfig):
    """``zero_optimization.offload_optimizer``: where fp32 master weights and Adam moments live.

    The optimizer step always runs on the CPU. ``pipeline_read``/``pipeline_write``
    overlap the next sub-group's read and the previous one's write with the current
    update; ``ratio`` < 1 is DeepSpeed's partial offload (stage 3, device cpu).
    """

    PATH: ClassVar[str] = "zero_optimization.offload_optimizer"
    IGNORED: ClassVar[Mapping[str, str]] = {
        "super_offload": "DeepSpeed Superchip offload path",
        "cpuadam_cores_perc": "tiermem's CPU Adam sizes its own thread pool",
        "convert_grad_on_cpu": "tiermem converts gradients where its optimizer step runs",
    }

    buffer_count: int = setting(4, kind="int", lo=0)
    pipeline_read: bool = setting(False, kind="bool")
    pipeline_write: bool = setting(False, kind="bool")
    fast_init: bool = setting(False, kind="bool")
    ratio: float = setting(1.0, kind="float", lo=0.0, hi=1.0)

    @property
    def pipeline(self) -> bool:
        """Whether the optimizer step pipelines reads or writes of sub-groups."""
        return self.pipeline_read or self.pipeline_write


# ----------------------------------------------------------------------------- zero

_ZERO_IGNORED = {
    key: "a DeepSpeed ZeRO tuning knob tiermem does not have"
    for key in (
        "allgather_partitions",
        "load_from_fp32_weights",
        "elastic_checkpoint",
        "ignore_unused_parameters",
        "legacy_stage1",
        "use_multi_rank_bucket_allreduce",
        "stage3_model_persistence_threshold",
        "stage3_module_granularity_threshold",
        "stage3_use_all_reduce_for_fetch_params",
        "zero_hpz_partition_size",
        "zero_quantized_weights",
        "zero_quantized_nontrainable_weights",
        "zero_quantized_gradients",
        "memory_efficient_linear",
        "override_module_apply",
        "pipeline_loading_checkpoint",
        "mics_shard_size",
        "mics_hierarchical_params_gather",
        "zeropp_loco_param",
        "log_trace_cache_warnings",
        "stage3_allgather_sequential",
        "stage3_partition_stream_chunk_size",
        "enable_sanity_checks",
        "save_muon_momentum_buffer_in_memory",
        "leaf_module",
        "zenflow",
    )
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZeroConfig(Section):
    """``zero_optimization``: the ZeRO stage, offload targets and bucket sizes.

    Sizes are in elements, as in DeepSpeed. ``overlap_comm`` left unset becomes
    True at stage 3 and False otherwise (DeepSpeed's rule).

    ``sub_group_size`` is DeepSpeed's: the most elements of whole parameters the
    offloaded optimizer step reads, updates and writes as one unit; a parameter
    larger than it is a sub-group of its own, never cut. ``sub_group_split_params``
    (a tiermem extension, default false) cuts parameters every
    ``sub_group_size`` elements instead.
    """

    PATH: ClassVar[str] = "zero_optimization"
    LAX: ClassVar[bool] = True  # DeepSpeed: a pydantic model
    ALIASES: ClassVar[Mapping[str, str]] = {
        "stage3_gather_fp16_weights_on_model_save": "stage3_gather_16bit_weights_on_model_save",
        "gather_16bit_weights_on_model_save": "stage3_gather_16bit_weights_on_model_save",
        "prefetch_bucket_size": "stage3_prefetch_bucket_size",
        "param_persistence_threshold": "stage3_param_persistence_threshold",
        "max_live_parameters": "stage3_max_live_parameters",
        "max_reuse_distance": "stage3_max_reuse_distance",
    }
    IGNORED: ClassVar[Mapping[str, str]] = {
        **_ZERO_IGNORED,
        "cpu_offload_use_pin_memory": (
            'deprecated; DeepSpeed ignores it too: set "pin_memory" inside '
            '"offload_param" / "offload_optimizer"'
        ),
    }
    #: DeepSpeed's deprecated switches it still converts: key -> the section it turns on
    LEGACY_OFFLOAD: ClassVar[Mapping[str, str]] = {
        "cpu_offload": "offload_optimizer",
        "cpu_offload_param": "offload_param",
    }

    @classmethod
    def preprocess(cls, raw: Mapping[str, Any], path: str, ctx: ParseContext) -> Mapping[str, Any]:
        """``cpu_offload: true`` -> ``offload_optimizer: {"device": "cpu"}`` and
        ``cpu_offload_param: true`` -> ``offload_param: {"device": "cpu"}``, as DeepSpeed
        converts them (false or null: nothing); giving both spellings is an error, as in
        DeepSpeed."""
        out = dict(raw)
        for old, new in cls.LEGACY_OFFLOAD.items():
            if old not in out:
                continue
            value = out.pop(old)
            where = join_path(path, old)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(f"expected true, false or null, got {value!r}", path=where)
            if new in out:
                raise ConfigError(
                    f'"{old}" is the deprecated form of "{new}"; give only one of them',
                    path=where,
                )
            if value:
                out[new] = {"device": "cpu"}
                warnings.warn(
                    f'{where} is deprecated; read as "{new}": {{"device": "cpu"}}, '
                    "as DeepSpeed converts it",
                    ConfigWarning,
                    stacklevel=2,
                )
        return out

    stage: int = setting(0, kind="int", lo=0, hi=3)
    offload_param: OffloadConfig = setting(kind="section", section=OffloadConfig)
    offload_optimizer: OffloadOptimizerConfig = setting(
        kind="section", section=OffloadOptimizerConfig
    )
    sub_group_size: int = setting(1_000_000_000, kind="int", lo=0)
    sub_group_split_params: bool = setting(False, kind="bool")
    stage3_prefetch_bucket_size: int | Auto = setting(50_000_000, kind="int", lo=0, auto=True)
    stage3_max_live_parameters: int = setting(1_000_000_000, kind="int", lo=0)
    stage3_max_reuse_distance: int = setting(1_000_000_000, kind="int", lo=0)
    stage3_param_persistence_threshold: int | Auto = setting(100_000, kind="int", lo=0, auto=True)
    stage3_gather_16bit_weights_on_model_save: bool = setting(False, kind="bool")
    reduce_bucket_size: int | Auto = setting(500_000_000, kind="int", lo=0, auto=True)
    allgather_bucket_size: int = setting(500_000_000, kind="int", lo=0)
    overlap_comm: bool | None = setting(None, kind="bool", nullable=True)
    contiguous_gradients: bool = setting(True, kind="bool")
    reduce_scatter: bool = setting(True, kind="bool")
    round_robin_gradients: bool = setting(False, kind="bool")

    def _check(self) -> None:
        if self.overlap_comm is None:
            object.__setattr__(self, "overlap_comm", self.stage == 3)
        param, opt = self.offload_param, self.offload_optimizer
        if param.device not in ("none", "auto") and self.stage != 3:
            raise ConfigError(
                f'offloading parameters needs "stage": 3, but the stage is {self.stage}',
                path=param.field_path("device"),
            )
        if opt.device not in ("none", "auto") and self.stage == 0:
            raise ConfigError(
                'offloading the optimizer needs ZeRO "stage" 1, 2 or 3, but the stage is 0',
                path=opt.field_path("device"),
            )
        if opt.device == "nvme" and self.stage != 3:
            raise ConfigError(
                f'optimizer offload to NVMe needs "stage": 3, but the stage is {self.stage}',
                path=opt.field_path("device"),
            )
        if opt.ratio < 1.0 and (self.stage != 3 or opt.device != "cpu"):
            raise ConfigError(
                'a partial optimizer offload ("ratio" < 1) needs "stage": 3 and '
                f'"device": "cpu" (got stage {self.stage}, device "{opt.device}")',
                path=opt.field_path("ratio"),
            )

    def resolve_auto(self, hidden_size: int | None = None) -> ZeroConfig:
        """A copy with the ``"auto"`` bucket sizes derived from the model's hidden size.

        Hugging Face's rules: ``reduce_bucket_size = h*h``,
        ``stage3_prefetch_bucket_size = int(0.9*h*h)``,
        ``stage3_param_persistence_threshold = 10*h``. Without ``hidden_size``
        the DeepSpeed defaults are used.
        """
        if hidden_size is not None and (isinstance(hidden_size, bool) or hidden_size < 1):
            raise ValueError(f"hidden_size: expected a positive integer, got {hidden_size!r}")
        derived = {
            "reduce_bucket_size": (hidden_size * hidden_size if hidden_size else 500_000_000),
            "stage3_prefetch_bucket_size": (
                int(0.9 * hidden_size * hidden_size) if hidden_size else 50_000_000
            ),
            "stage3_param_persistence_threshold": (10 * hidden_size if hidden_size else 100_000),
        }
        changes = {k: v for k, v in derived.items() if getattr(self, k) is AUTO}
        return dataclasses.replace(self, **changes) if changes else self


# ----------------------------------------------------------------------------- precision


@dataclasses.dataclass(frozen=True, kw_only=True)
class FP16Config(Section):
    """``fp16``: fp16 mixed precision with (by default dynamic) loss scaling.

    ``loss_scale`` 0 means dynamic: start at ``2**initial_scale_power``, halve
    on overflow after ``hysteresis`` overflows, double after
    ``loss_scale_window`` clean steps, never below ``min_loss_scale``.
    """

    PATH: ClassVar[str] = "fp16"
    LAX: ClassVar[bool] = True  # DeepSpeed: a pydantic model
    IGNORED: ClassVar[Mapping[str, str]] = {
        "auto_cast": "tiermem does not cast the model's inputs",
        "fp16_master_weights_and_grads": "tiermem always keeps fp32 master weights",
    }

    enabled: bool | Auto = setting(False, kind="bool", auto=True)
    loss_scale: float = setting(0.0, kind="float", lo=0.0)
    initial_scale_power: int = setting(16, kind="int", lo=0, hi=127)
    loss_scale_window: int = setting(1000, kind="int", lo=1)
    hysteresis: int = setting(2, kind="int", lo=1)
    consecutive_hysteresis: bool = setting(False, kind="bool")
    min_loss_scale: float = setting(1.0, kind="float", lo=0.0, lo_open=True)

    @property
    def dynamic_loss_scale(self) -> bool:
        """True when ``loss_scale`` is 0 (dynamic scaling)."""
        return self.loss_scale == 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class BF16Config(Section):
    """``bf16`` (old name ``bfloat16``): bf16 mixed precision, no loss scaling."""

    PATH: ClassVar[str] = "bf16"
    LAX: ClassVar[bool] = True  # DeepSpeed: a pydantic model
    IGNORED: ClassVar[Mapping[str, str]] = {
        "immediate_grad_update": "tiermem hands gradients to the optimizer tier as they come",
        "check_grad_overflow": "bf16 needs no overflow check",
        "bf16_master_weights_and_grads": "tiermem always keeps fp32 master weights",
        "bf16_optimizer_states": "moments follow optimizer.params.state_dtype",
    }
    DELETE: ClassVar[Mapping[str, str]] = dict.fromkeys(
        (
            "loss_scale",
            "initial_scale_power",
            "loss_scale_window",
            "hysteresis",
            "consecutive_hysteresis",
            "min_loss_scale",
        ),
        "an fp16 loss-scaling key: bf16 has fp32's range and uses no loss scale "
        "(DeepSpeed refuses it here too)",
    )

    enabled: bool | Auto = setting(False, kind="bool", auto=True)


# ----------------------------------------------------------------------------- aio


@dataclasses.dataclass(frozen=True, kw_only=True)
class AioSectionConfig(Section):
    """Top-level ``aio``: how swap files are read and written.

    ``thread_count`` (DeepSpeed's old name) and ``num_threads`` (what
    ``ds_nvme_tune`` prints) are accepted for ``intra_op_parallelism``.
    ``backend`` and ``direct`` are tiermem additions (see :class:`tiermem.aio.AioConfig`).
    """

    PATH: ClassVar[str] = "aio"
    ALIASES: ClassVar[Mapping[str, str]] = {
        "thread_count": "intra_op_parallelism",
        "num_threads": "intra_op_parallelism",
    }
    IGNORED: ClassVar[Mapping[str, str]] = {
        "io_backend": 'tiermem picks io_uring/libaio/threads itself; see "aio.backend"',
    }

    block_size: int = setting(1 << 20, kind="int", lo=4096, hi=_GIB, multiple_of=4096)
    queue_depth: int = setting(8, kind="int", lo=1, hi=4096)
    intra_op_parallelism: int = setting(1, kind="int", lo=1, hi=256)
    single_submit: bool = setting(False, kind="bool")
    overlap_events: bool = setting(True, kind="bool")
    use_gds: bool = setting(False, kind="bool")
    backend: str = setting(
        "auto", kind="choice", choices=("auto", "io_uring", "libaio", "threads"), fold_case=True
    )
    direct: str = setting("auto", kind="choice", choices=("auto", "on", "off"), fold_case=True)

    def to_aio_config(self) -> Any:
        """The :class:`tiermem.aio.AioConfig` for the store's swap files.

        [Note: ``intra_op_parallelism`` maps to the ``threads`` backend's pool
        size; DeepSpeed's default of 1 leaves tiermem's own default (one thread
        per request in flight, at most 16), since one thread would serialise
        every transfer. ``single_submit`` and ``overlap_events`` have no
        equivalent: tiermem's engine always batches submissions and reaps
        completions while new requests are in flight.]
        """
        from tiermem.aio import AioConfig

        threads = 0 if self.intra_op_parallelism == 1 else self.intra_op_parallelism
        return AioConfig(
            backend=self.backend,
            block_size=self.block_size,
            queue_depth=self.queue_depth,
            direct=self.direct,
            threads=threads,
        )


# ----------------------------------------------------------------------------- checkpointing


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActivationCheckpointingConfig(Section):
    """``activation_checkpointing``: recompute activations in backward to save memory.

    tiermem acts on ``cpu_checkpointing``; the other keys are DeepSpeed's
    Megatron-style checkpointing knobs, accepted with a :class:`ConfigWarning`
    when set to anything but their default, since nothing here acts on them.
    """

    PATH: ClassVar[str] = "activation_checkpointing"
    NOT_ACTED_ON: ClassVar[Mapping[str, str]] = {
        "partition_activations": "tiermem does not partition saved activations across ranks",
        "contiguous_memory_optimization": "tiermem does not copy checkpoints into one buffer",
        "number_checkpoints": "tiermem does not preallocate checkpoint buffers",
        "synchronize_checkpoint_boundary": "tiermem does not synchronize at checkpoints",
        "profile": "tiermem does not time the checkpointed forwards",
    }

    @classmethod
    def preprocess(cls, raw: Mapping[str, Any], path: str, ctx: ParseContext) -> Mapping[str, Any]:
        for key, why in cls.NOT_ACTED_ON.items():
            if raw.get(key) not in (None, False):
                ctx.ignored.append((join_path(path, key), f"accepted, not acted on: {why}"))
        return raw

    partition_activations: bool = setting(False, kind="bool")
    cpu_checkpointing: bool = setting(False, kind="bool")
    contiguous_memory_optimization: bool = setting(False, kind="bool")
    number_checkpoints: int | None = setting(None, kind="int", lo=1, nullable=True)
    synchronize_checkpoint_boundary: bool = setting(False, kind="bool")
    profile: bool = setting(False, kind="bool")


# ----------------------------------------------------------------------------- optimizer

OPTIMIZER_TYPES = ("Adam", "AdamW")
#: Adam moment storage (tiermem.adam.STATE_DTYPES; repeated here so the config stays importable
#: without the native library)
STATE_DTYPES = ("fp32", "bf16", "int8")


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig(Section):
    """``optimizer``: ``{"type": "Adam"|"AdamW", "params": {...}}``.

    ``adamw_mode`` is True for AdamW, and for Adam unless its params say
    ``"adam_w_mode": false``: DeepSpeed's ``Adam`` decouples weight decay by
    default, so a DeepSpeed config means the same thing here.
    """

    PATH: ClassVar[str] = "optimizer"
    PARAMS: ClassVar[tuple[str, ...]] = (
        "lr",
        "betas",
        "eps",
        "weight_decay",
        "bias_correction",
        "adam_w_mode",
        "state_dtype",
        "fp32_optimizer_states",
    )
    IGNORED_PARAMS: ClassVar[Mapping[str, str]] = {
        "torch_adam": "tiermem always uses its own CPU Adam",
        "fused": "tiermem always uses its own CPU Adam",
        "max_grad_norm": 'not an optimizer parameter; use the top-level "gradient_clipping"',
    }

    type: str = setting(kind="choice", choices=OPTIMIZER_TYPES, fold_case=True)
    lr: float | Auto = setting(1e-3, kind="float", lo=0.0, auto=True)
    betas: tuple[float, float] | Auto = setting(
        (0.9, 0.999), kind="float_pair", lo=0.0, hi=1.0, hi_open=True, auto=True
    )
    eps: float | Auto = setting(1e-8, kind="float", lo=0.0, auto=True)
    weight_decay: float | Auto = setting(0.0, kind="float", lo=0.0, auto=True)
    bias_correction: bool = setting(True, kind="bool")
    adamw_mode: bool | None = setting(None, kind="bool", nullable=True)
    # [Note: how Adam's moments are stored (tiermem.adam.STATE_DTYPES); DeepSpeed's
    #  "fp32_optimizer_states": false (CPU Adam keeping moments in bf16) means "bf16".]
    state_dtype: str = setting("fp32", kind="choice", choices=STATE_DTYPES, fold_case=True)

    @classmethod
    def field_path(cls, name: str) -> str:
        if name == "type":
            return "optimizer.type"
        json_name = "adam_w_mode" if name == "adamw_mode" else name
        return f"optimizer.params.{json_name}"

    @classmethod
    def key_paths(cls, path: str) -> list[str]:
        return [f"{path}.type", f"{path}.params"] + [f"{path}.params.{k}" for k in cls.PARAMS]

    def _check(self) -> None:
        if self.type == "AdamW" and self.adamw_mode is False:
            # [Note: DeepSpeed's rule (runtime/engine.py, _configure_basic_optimizer:
            #  effective_adam_w_mode = type is AdamW or adam_w_mode; its unit test
            #  tests/unit/ops/adam/test_adamw.py expects AdamW + false -> adam_w_mode
            #  True): the type wins and decay stays decoupled. Same meaning here,
            #  with a warning, since the file asks for something it does not get.]
            warnings.warn(
                'optimizer.params.adam_w_mode is false, but "type": "AdamW" always decouples '
                'weight decay (as in DeepSpeed); for L2-style decay write "type": "Adam"',
                ConfigWarning,
                stacklevel=2,
            )
            object.__setattr__(self, "adamw_mode", True)
        if self.adamw_mode is None:
            object.__setattr__(self, "adamw_mode", True)

    def to_dict(self) -> dict[str, Any]:
        params = {
            "lr": _json(self.lr),
            "betas": _json(self.betas),
            "eps": _json(self.eps),
            "weight_decay": _json(self.weight_decay),
            "bias_correction": self.bias_correction,
            "adam_w_mode": self.adamw_mode,
            "state_dtype": self.state_dtype,
        }
        return {"type": self.type, "params": params}

    @classmethod
    def parse(cls, raw: Any, ctx: ParseContext) -> OptimizerConfig:
        """Parse the ``optimizer`` JSON object."""
        raw = expect_mapping(raw, "optimizer")
        for key in raw:
            if key not in ("type", "params"):
                raise unknown_key_error("optimizer", key, ("type", "params"), ctx.key_index)
        if "type" not in raw:
            raise ConfigError(
                'required key missing; expected "Adam" or "AdamW"', path="optimizer.type"
            )
        kind = raw["type"]
        if not isinstance(kind, str) or kind.lower() not in ("adam", "adamw"):
            raise ConfigError(
                f'expected "Adam" or "AdamW" (tiermem\'s CPU Adam implements these two), '
                f"got {kind!r}",
                path="optimizer.type",
            )
        params = expect_mapping(raw.get("params") or {}, "optimizer.params")
        values: dict[str, Any] = {"type": kind}
        for key, value in params.items():
            path = join_path("optimizer.params", key)
            if key == "adam_w_mode":
                values["adamw_mode"] = value
            elif key == "fp32_optimizer_states":
                if not isinstance(value, bool):
                    raise ConfigError(f"expected true or false, got {value!r}", path=path)
                spelled = "fp32" if value else "bf16"
                given = params.get("state_dtype")
                if isinstance(given, str) and given.lower() != spelled:
                    raise ConfigError(
                        f'says {str(value).lower()} ("{spelled}" moments) but '
                        f'"state_dtype" is {given!r}; give one of the two',
                        path=path,
                    )
                values["state_dtype"] = spelled
            elif key in cls.PARAMS:
                values[key] = value
            elif key == "amsgrad":
                if value is not False:
                    raise ConfigError("AMSGrad is not supported; expected false", path=path)
            elif key in cls.IGNORED_PARAMS:
                ctx.ignored.append((path, cls.IGNORED_PARAMS[key]))
            else:
                raise unknown_key_error("optimizer.params", key, cls.PARAMS, ctx.key_index)
        return cls(**values)

    def resolve_auto(self) -> OptimizerConfig:
        """A copy with ``"auto"`` hyper-parameters set to Hugging Face's defaults.

        [Note: "auto" here is written by the Hugging Face Trainer, which fills
        these from ``TrainingArguments``; without a Trainer the same defaults
        apply: lr 5e-5, betas (0.9, 0.999), eps 1e-8, weight_decay 0.]
        """
        defaults = {"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0}
        changes = {k: v for k, v in defaults.items() if getattr(self, k) is AUTO}
        return dataclasses.replace(self, **changes) if changes else self


def _json(value: Any) -> Any:
    if value is AUTO:
        return "auto"
    return list(value) if isinstance(value, tuple) else value


# ----------------------------------------------------------------------------- scheduler

WARMUP_TYPES = ("log", "linear")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchedulerParams(Section):
    """Base of the per-type ``scheduler.params`` sections."""

    PATH: ClassVar[str] = "scheduler.params"

    last_batch_iteration: int = setting(-1, kind="int", lo=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WarmupLRParams(SchedulerParams):
    """``WarmupLR``: from ``warmup_min_lr`` to ``warmup_max_lr`` over ``warmup_num_steps``,
    then constant. A list gives one value per optimizer parameter group."""

    warmup_min_lr: float | tuple[float, ...] | Auto = setting(
        0.0, kind="float_or_floats", lo=0.0, auto=True
    )
    warmup_max_lr: float | tuple[float, ...] | Auto = setting(
        0.001, kind="float_or_floats", lo=0.0, auto=True
    )
    warmup_num_steps: int | Auto = setting(1000, kind="int", lo=0, auto=True)
    warmup_type: str = setting("log", kind="choice", choices=WARMUP_TYPES, fold_case=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WarmupDecayLRParams(WarmupLRParams):
    """``WarmupDecayLR``: WarmupLR, then linear decay back to ``warmup_min_lr`` at
    ``total_num_steps``."""

    total_num_steps: int | Auto = setting(kind="int", lo=1, auto=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class WarmupCosineLRParams(SchedulerParams):
    """``WarmupCosineLR``: a ratio of the optimizer's lr, warmed up from
    ``warmup_min_ratio`` to 1, then cosine-decayed to ``cos_min_ratio`` at
    ``total_num_steps``."""

    total_num_steps: int | Auto = setting(kind="int", lo=1, auto=True)
    warmup_min_ratio: float = setting(0.0, kind="float", lo=0.0, hi=1.0)
    warmup_num_steps: int | Auto = setting(1000, kind="int", lo=0, auto=True)
    cos_min_ratio: float = setting(0.0001, kind="float", lo=0.0, hi=1.0)
    warmup_type: str = setting("log", kind="choice", choices=WARMUP_TYPES, fold_case=True)


SCHEDULER_PARAMS: Mapping[str, type[SchedulerParams]] = {
    "WarmupLR": WarmupLRParams,
    "WarmupDecayLR": WarmupDecayLRParams,
    "WarmupCosineLR": WarmupCosineLRParams,
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SchedulerConfig(Section):
    """``scheduler``: ``{"type": "WarmupLR"|"WarmupDecayLR"|"WarmupCosineLR", "params": {...}}``."""

    PATH: ClassVar[str] = "scheduler"

    type: str = setting(kind="choice", choices=tuple(SCHEDULER_PARAMS), fold_case=True)
    params: SchedulerParams = setting(kind="section", section=SchedulerParams)

    def _check(self) -> None:
        expected = SCHEDULER_PARAMS[self.type]
        if type(self.params) is not expected:
            raise self.error(
                "params", f"{self.type} takes {expected.__name__}, got {type(self.params).__name__}"
            )

    @classmethod
    def key_paths(cls, path: str) -> list[str]:
        out = [f"{path}.type", f"{path}.params"]
        for params_cls in SCHEDULER_PARAMS.values():
            for key in params_cls.json_fields():
                if f"{path}.params.{key}" not in out:
                    out.append(f"{path}.params.{key}")
        return out

    @classmethod
    def parse(cls, raw: Any, ctx: ParseContext) -> SchedulerConfig:
        """Parse the ``scheduler`` JSON object."""
        raw = expect_mapping(raw, "scheduler")
        for key in raw:
            if key not in ("type", "params"):
                raise unknown_key_error("scheduler", key, ("type", "params"), ctx.key_index)
        names = {name.lower(): name for name in SCHEDULER_PARAMS}
        kind = raw.get("type")
        if not isinstance(kind, str) or kind.lower() not in names:
            supported = ", ".join(f'"{n}"' for n in SCHEDULER_PARAMS)
            raise ConfigError(
                f"expected one of {supported}, got {kind!r}"
                + ("" if kind is not None else " (the key is missing)"),
                path="scheduler.type",
            )
        params_cls = SCHEDULER_PARAMS[names[kind.lower()]]
        values = collect_keys(params_cls, raw.get("params") or {}, "scheduler.params", ctx)
        check_required(params_cls, values)
        return cls(type=kind, params=params_cls(**values))


__all__ = [
    "ActivationCheckpointingConfig",
    "AioSectionConfig",
    "BF16Config",
    "FP16Config",
    "OffloadConfig",
    "OffloadOptimizerConfig",
    "OptimizerConfig",
    "SchedulerConfig",
    "SchedulerParams",
    "WarmupCosineLRParams",
    "WarmupDecayLRParams",
    "WarmupLRParams",
    "ZeroConfig",
]
