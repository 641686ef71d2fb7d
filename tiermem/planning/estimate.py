"""Bytes on each tier, fit and step time of each ZeRO stage 3 placement; the recommended config.

Four placements (:class:`Placement`): nothing offloaded; optimizer states on
the CPU; optimizer states on NVMe; parameters and optimizer states on NVMe.
For each, :func:`estimate` counts per rank, in bytes, what the engine
allocates (``engine/placement.py``, ``param_home.py``, ``optimizer_step.py``,
``grad_accum.py``):

* model state: compute-dtype parameter shards (``dtype_bytes``/param), the
  fp32 master weights and Adam moments (12), the fp32 gradient accumulators
  (4), on the tier their placement puts them;
* the offload buffers: the store's host budget, sized like the engine sizes
  it: ``offload_param.buffer_count + 1`` largest parameter shards,
  ``max(offload_optimizer.buffer_count, 2) + 1`` optimizer sub-groups, two
  gradient accumulators and twice the prefetch window (pinned on CUDA);
* the gathered parameters of stage 3 (persistent small groups, the largest
  group plus the prefetch window) and one gradient in flight;
* activations per micro-batch, with and without activation checkpointing;
* allocator overhead: a share of the device bytes (the caching allocator's
  rounding and fragmentation; glibc's arenas on the CPU) and a fixed runtime
  (CUDA context, or Python and torch on a CPU-only machine).

[Note: the engine sizes its offload buffers from the largest parameter shard,
not from ``buffer_size`` (DeepSpeed allocates ``buffer_count x buffer_size``
whatever the model), so the pinned bytes here are ``buffer_count x`` the
largest shard, and the recommended ``buffer_size`` is that shard, which a
DeepSpeed run of the same config also accepts.]

Step time: each component's bytes or FLOPs over the measured (or stated)
rate, for one optimizer step of ``gradient_accumulation_steps`` micro-batches:
compute ``6 x params x tokens`` (8 with checkpointing: the forward runs twice),
host<->device copies (CUDA only), NVMe reads and writes, and the optimizer
pass (``4 + 2 x 12 + dtype_bytes`` bytes per parameter read and written with
fp32 states, 8 or ~6 instead of 12 with bf16 / int8 moments, over
memory bandwidth). NVMe traffic assumes nothing is reused from the store's
host buffers between uses, so it is mostly an upper bound: on the bench GPT of
``bench/results/train.json`` (67M parameters, both on NVMe) it predicts 1.62 GB
read and 1.21 GB written a step where the store moved 0.64 and 0.98 GB. (A
prefetch evicted before its use is read twice: the tiny preset's step once
read 1.4x the prediction.)
``serial_seconds`` adds them; ``seconds`` assumes what the
engine overlaps is hidden (parameter I/O under compute, optimizer I/O under
the Adam pass), so it is the one to expect from a good run.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from tiermem.adam import STATE_DTYPES, state_nbytes
from tiermem.buffers import round_up
from tiermem.planning.machine import MachineFacts
from tiermem.planning.shapes import ModelShape

__all__ = [
    "PLACEMENTS",
    "Plan",
    "Placement",
    "PlacementEstimate",
    "PlanSettings",
    "TierBytes",
    "activation_bytes",
    "estimate",
    "plan",
    "recommended_config",
]

GiB = 1 << 30


class Placement(enum.Enum):
    """Where parameters and optimizer states live (``offload_param``/``offload_optimizer``)."""

    NONE = "no offload"
    OPTIMIZER_CPU = "optimizer on CPU"
    OPTIMIZER_NVME = "optimizer on NVMe"
    PARAMS_OPTIMIZER_NVME = "params and optimizer on NVMe"

    @property
    def param_device(self) -> str:
        """``offload_param.device``."""
        return "nvme" if self is Placement.PARAMS_OPTIMIZER_NVME else "none"

    @property
    def optimizer_device(self) -> str:
        """``offload_optimizer.device``."""
        return {
            Placement.NONE: "none",
            Placement.OPTIMIZER_CPU: "cpu",
            Placement.OPTIMIZER_NVME: "nvme",
            Placement.PARAMS_OPTIMIZER_NVME: "nvme",
        }[self]

    @property
    def uses_nvme(self) -> bool:
        """Whether anything lives on NVMe."""
        return self.optimizer_device == "nvme"


PLACEMENTS = tuple(Placement)


@dataclass(frozen=True, kw_only=True)
class PlanSettings:
    """The run and engine knobs the estimate depends on (per rank; defaults are the engine's).

    Sizes in elements, as in the config. ``dtype_bytes`` 2 is bf16/fp16, 4 fp32.
    ``memory_fraction`` is the share of each tier's capacity the plan may fill.
    ``model_built_on_host`` False: the model is built inside ``tiermem.init_context``
    (partitioned as it is built, never whole in host memory). ``ranks_per_host``
    ranks share one machine's host memory and NVMe (each has its own GPU).
    ``placements`` restricts the candidates (the engine's ``"auto"`` passes the
    ones the config's stage and paths allow). ``state_dtype`` is how Adam's
    moments are stored (``optimizer.params.state_dtype``): fp32 states take 12
    bytes per parameter, bf16 8, int8 about 6.
    """

    world_size: int = 1
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    seq_len: int | None = None
    dtype_bytes: int = 2
    pin_memory: bool = True
    param_buffer_count: int = 5
    optimizer_buffer_count: int = 4
    sub_group_size: int = 1_000_000_000
    sub_group_split_params: bool = False
    prefetch_bucket_size: int = 50_000_000
    param_persistence_threshold: int = 100_000
    memory_fraction: float = 0.9
    allocator_fraction: float = 0.1
    runtime_bytes: int | None = None
    model_built_on_host: bool = True
    ranks_per_host: int = 1
    placements: tuple[Placement, ...] = PLACEMENTS
    state_dtype: str = "fp32"

    def __post_init__(self) -> None:
        if self.state_dtype not in STATE_DTYPES:
            raise ValueError(
                f"PlanSettings.state_dtype: expected one of {list(STATE_DTYPES)}, "
                f"got {self.state_dtype!r}"
            )
        for key in (
            "world_size",
            "ranks_per_host",
            "micro_batch_size",
            "gradient_accumulation_steps",
            "param_buffer_count",
            "optimizer_buffer_count",
            "sub_group_size",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"PlanSettings.{key}: expected a positive integer, got {value!r}")
        if self.dtype_bytes not in (2, 4):
            raise ValueError(f"PlanSettings.dtype_bytes: expected 2 or 4, got {self.dtype_bytes!r}")
        if not 0 < self.memory_fraction <= 1:
            raise ValueError(
                f"PlanSettings.memory_fraction: expected (0, 1], got {self.memory_fraction!r}"
            )
        if not self.placements:
            raise ValueError("PlanSettings.placements: expected at least one placement")


@dataclass(frozen=True, kw_only=True)
class TierBytes:
    """Bytes on one tier, by item (what each number is for)."""

    items: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """All items."""
        return sum(self.items.values())


@dataclass(frozen=True, kw_only=True)
class PlacementEstimate:
    """One placement's bytes per tier, fit and step time.

    ``device`` holds the model state on the compute device and the gathered
    parameters; ``activations``/``activations_checkpointed`` are per micro-batch
    on the device; ``overhead`` is the allocator's share and the runtime.
    ``needed``: the least bytes of each physical memory ("device", "host",
    "nvme") the placement fits in (with activation checkpointing); on a
    CPU-only machine device bytes count as host.
    ``host`` is pageable and pinned host memory (``pinned`` of it pinned).
    """

    placement: Placement
    device: TierBytes
    host: TierBytes
    nvme: TierBytes
    pinned_bytes: int
    activations: int
    activations_checkpointed: int
    overhead: int
    fits: bool
    needs_checkpointing: bool
    reasons: tuple[str, ...]
    seconds: float
    serial_seconds: float
    time_parts: dict[str, float]
    needed: dict[str, int]
    nvme_bytes_per_step: dict[str, int]

    def device_total(self, *, checkpointing: bool) -> int:
        """Device bytes of a step, activations and overhead included."""
        act = self.activations_checkpointed if checkpointing else self.activations
        return self.device.total + act + self.overhead

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "placement": self.placement.name.lower(),
            "description": self.placement.value,
            "offload_param": self.placement.param_device,
            "offload_optimizer": self.placement.optimizer_device,
            "device_bytes": dict(self.device.items),
            "host_bytes": dict(self.host.items),
            "nvme_bytes": dict(self.nvme.items),
            "totals": {
                "device": self.device.total,
                "host": self.host.total,
                "pinned_host": self.pinned_bytes,
                "nvme": self.nvme.total,
            },
            "activations_per_micro_batch": self.activations,
            "activations_per_micro_batch_checkpointed": self.activations_checkpointed,
            "allocator_and_runtime_overhead": self.overhead,
            "fits": self.fits,
            "needs_activation_checkpointing": self.needs_checkpointing,
            "reasons": list(self.reasons),
            "needed_bytes": dict(self.needed),
            "step_seconds": self.seconds,
            "step_seconds_serial": self.serial_seconds,
            "step_time_parts": dict(self.time_parts),
            "nvme_bytes_per_step": dict(self.nvme_bytes_per_step),
        }


def _up(n: int | float) -> int:
    """Bytes as the store's buffers hold them (its alignment and rounding)."""
    return round_up(int(n))


def _shards(shape: ModelShape, world: int) -> list[int]:
    return [-(-g // world) for g in shape.groups]


def activation_bytes(shape: ModelShape, s: PlanSettings, *, checkpointing: bool) -> tuple[int, str]:
    """Saved activations of one micro-batch plus the backward's transient peak, and a note.

    Per block and token, ``10h + 2I`` values (``10h + 4I`` with a gated MLP):
    the two LayerNorm inputs, QKV input and output, the contiguous q/k/v heads
    and attention output SDPA keeps, the projection and MLP inputs, the MLP's
    pre- and post-activation (SDPA keeps no attention matrix). The head
    keeps the logits, their fp32 copy (bf16/fp16 runs) and the log-softmax
    (fp32), and its backward holds a gradient as large. With checkpointing,
    each block keeps its input and one block's activations exist at a time.
    """
    if not shape.knows_activations or not shape.vocab_size:
        return 0, "unknown (hidden size, layers, sequence or vocabulary not given)"
    b = s.dtype_bytes
    seq = s.seq_len or shape.seq_len
    tokens = s.micro_batch_size * seq
    h = shape.hidden_size
    per_block = tokens * (10 * h + (4 if shape.gated_mlp else 2) * shape.mlp_width) * b
    embed = tokens * h * b
    head = tokens * shape.vocab_size * (b + 4 + (4 if b != 4 else 0))
    head_grad = tokens * shape.vocab_size * 4
    if checkpointing:
        blocks = shape.num_layers * tokens * h * b + per_block
    else:
        blocks = shape.num_layers * per_block
    return embed + blocks + head + head_grad + per_block, "estimated"


def _lent(shape: ModelShape, s: PlanSettings, p: Placement, device_is_host: bool) -> int:
    """Elements of gathered groups computing on the store's buffers (``engine/placement.py``:
    one rank whose compute device is the CPU, parameters on NVMe)."""
    if not (device_is_host and s.world_size == 1 and p.param_device == "nvme"):
        return 0
    return s.param_buffer_count * max(_shards(shape, 1))


def _gathered(
    shape: ModelShape, s: PlanSettings, p: Placement, device_is_host: bool
) -> dict[str, int]:
    """Device bytes of stage 3's gathered parameters and a gradient in flight."""
    b = s.dtype_bytes
    home_on_device = p.param_device == "none"
    # one rank, shard on the device: the gathered buffer is the shard itself
    if home_on_device and s.world_size == 1:
        return {"gradient in flight": b * shape.largest_group}
    persistent = sum(g for g in shape.groups if g < s.param_persistence_threshold)
    window = min(shape.num_params - persistent, shape.largest_group + s.prefetch_bucket_size)
    # the groups lent from the store are in its budget (_store_budget)
    window -= _lent(shape, s, p, device_is_host)
    return {
        "persistent small groups (gathered)": b * persistent,
        "gathered parameters (largest group + prefetch)": b * max(window, 0),
        "gradient in flight": b * shape.largest_group,
    }


def _store_budget(shape: ModelShape, s: PlanSettings, p: Placement, device_is_host: bool) -> int:
    """The engine store's host budget (``engine/placement.py``'s rule)."""
    largest = max(_shards(shape, s.world_size))
    param_bytes = _up(largest * s.dtype_bytes)
    # a sub-group holds whole parameters: one larger than sub_group_size is its own
    sub_group = s.sub_group_size if s.sub_group_split_params else largest
    chunk_bytes = _up(state_nbytes(min(sub_group, largest), s.state_dtype))
    params_nvme = p.param_device == "nvme"
    prefetch = 2 * max(param_bytes if params_nvme else 0, chunk_bytes)
    host = 2 * prefetch
    if params_nvme:
        host += (s.param_buffer_count + 1) * param_bytes
        if _lent(shape, s, p, device_is_host):
            host += s.param_buffer_count * param_bytes
    if p.optimizer_device == "nvme":
        host += (max(s.optimizer_buffer_count, 2) + 1) * chunk_bytes
        host += 2 * _up(largest * 4)
    return host


def _tiers(
    shape: ModelShape, s: PlanSettings, p: Placement, device_is_host: bool
) -> tuple[dict, dict, dict, int]:
    """(device items, host items, nvme items, pinned bytes)."""
    b = s.dtype_bytes
    shards = _shards(shape, s.world_size)
    n = sum(shards)
    device: dict[str, int] = {}
    host: dict[str, int] = {}
    nvme: dict[str, int] = {}
    pinned = 0
    states = state_nbytes(n, s.state_dtype)
    label = "fp32 master + Adam moments" + (
        "" if s.state_dtype == "fp32" else f" ({s.state_dtype})"
    )
    if p.param_device == "none":
        device["parameter shards"] = b * n
    else:
        nvme["parameter shards"] = sum(_up(k * b) for k in shards)
    device.update(_gathered(shape, s, p, device_is_host))
    if p.optimizer_device == "none":
        device[label] = states
        device["fp32 gradient accumulators"] = 4 * n
    elif p.optimizer_device == "cpu":
        host[label] = states
        host["fp32 gradient accumulators"] = 4 * n
    else:
        # [Note: without sub_group_split_params the sub-groups are runs of whole
        #  parameters; the shape knows groups, not parameters, so each group's shard
        #  counts as one sub-group. A group has few parameters (a module's own), so
        #  this misses at most one store alignment per extra sub-group.]
        sub = s.sub_group_size if s.sub_group_split_params else max(shards, default=1)
        nvme[label] = sum(
            _up(state_nbytes(min(sub, k - lo), s.state_dtype))
            for k in shards
            for lo in range(0, k, sub)
        )
        nvme["fp32 gradient accumulators"] = sum(_up(4 * k) for k in shards)
    if p.uses_nvme:
        budget = _store_budget(shape, s, p, device_is_host)
        host["offload buffers (store host budget)"] = budget
        pinned += budget if s.pin_memory else 0
        # [Note: the store writes a dirty copy to a new extent and frees the old one
        #  when the write completes, so up to its host budget is on disk twice.]
        nvme["write-back headroom (copy-on-write extents)"] = budget
    elif p.optimizer_device == "cpu" and s.pin_memory:
        pinned += states  # HostShardOptimizer pins its states on CUDA machines
    if s.model_built_on_host:
        # [Note: a model built outside tiermem.init_context exists whole, in fp32, in
        #  host memory before initialize partitions it; the engine frees it, but the
        #  process's allocator keeps most of those pages (measured: RSS does not fall).]
        host["model as built (fp32, before initialize)"] = 4 * shape.num_params
    return device, host, nvme, pinned


def _runtime_bytes(machine: MachineFacts, s: PlanSettings) -> int:
    if s.runtime_bytes is not None:
        return s.runtime_bytes
    # [Note: a CUDA context with cuBLAS/cuDNN handles takes about 0.5-1 GiB of
    #  device memory; on a CPU-only machine Python with torch imported is about
    #  0.3-0.5 GiB of RSS.]
    return (3 * GiB) // 4 if not machine.device_is_host else GiB // 2


def _step_time(
    shape: ModelShape, s: PlanSettings, p: Placement, machine: MachineFacts, checkpointing: bool
) -> tuple[float, float, dict[str, float], dict[str, int]]:
    b = s.dtype_bytes
    n = sum(_shards(shape, s.world_size))
    gas = s.gradient_accumulation_steps
    seq = s.seq_len or shape.seq_len or 1
    tokens = s.micro_batch_size * seq * gas
    compute = (8 if checkpointing else 6) * shape.num_params * tokens / machine.flops
    copies = 0.0
    if not machine.device_is_host:
        copy_bytes = 0
        if p.param_device != "none":
            copy_bytes += 2 * b * n * gas  # shards to the device in forward and backward
        if p.optimizer_device != "none":
            copy_bytes += 4 * n * gas + b * n  # gradients out, updated shards back
        copies = copy_bytes / machine.h2d_bps
    param_read = param_write = opt_read = opt_write = 0
    if p.param_device == "nvme":
        param_read, param_write = 2 * b * n * gas, b * n
    if p.optimizer_device == "nvme":
        # states; the accumulators are fetched for every micro-batch's landing (the
        # store reads even the first, which overwrites) and again by the step
        states = state_nbytes(n, s.state_dtype)
        opt_read = states + 4 * n * (gas + 1)
        opt_write = states + 4 * n * gas
    param_io = param_read / machine.nvme_read_bps + param_write / machine.nvme_write_bps
    opt_io = opt_read / machine.nvme_read_bps + opt_write / machine.nvme_write_bps
    rate = machine.device_memory_bps if p.optimizer_device == "none" else machine.memory_bps
    # gradient (4) in, the states read and written, the compute-dtype copy out
    adam = (4 + 2 * state_nbytes(n, s.state_dtype) / max(n, 1) + b) * n / rate
    parts = {
        "compute": compute,
        "host_device_copies": copies,
        "nvme_params": param_io,
        "nvme_optimizer": opt_io,
        "optimizer": adam,
    }
    serial = sum(parts.values())
    overlapped = max(compute + copies, param_io) + max(adam, opt_io)
    traffic = {"nvme_read": param_read + opt_read, "nvme_write": param_write + opt_write}
    return overlapped, serial, parts, traffic


def estimate(
    shape: ModelShape, machine: MachineFacts, settings: PlanSettings, placement: Placement
) -> PlacementEstimate:
    """Bytes per tier, fit and step time of ``placement`` for ``shape`` on ``machine``."""
    s = settings
    device, host, nvme, pinned = _tiers(shape, s, placement, machine.device_is_host)
    if machine.device_is_host:
        pinned = 0  # nothing is pinned without CUDA
    act, _ = activation_bytes(shape, s, checkpointing=False)
    act_ckpt, _ = activation_bytes(shape, s, checkpointing=True)
    dev_state = sum(device.values())
    runtime = _runtime_bytes(machine, s)

    def overhead_for(act_bytes: int) -> int:
        return int(s.allocator_fraction * (dev_state + act_bytes)) + runtime

    def needs(act_bytes: int) -> dict[str, int]:
        """Bytes of each physical memory (on a CPU-only machine device bytes are host);
        host memory and the disk are shared by the ranks on one machine."""
        dev = dev_state + act_bytes + overhead_for(act_bytes)
        host_total = sum(host.values())
        k = s.ranks_per_host
        out = (
            {"host": k * (dev + host_total)}
            if machine.device_is_host
            else {
                "device": dev,
                "host": k * host_total,
            }
        )
        if placement.uses_nvme:
            out["nvme"] = k * sum(nvme.values())
        return out

    def problems(act_bytes: int) -> list[str]:
        out = []
        frac = s.memory_fraction
        need = needs(act_bytes)
        capacity = {
            "device": (machine.device_bytes, "device", "GiB"),
            "host": (
                machine.host_bytes,
                "host memory (the CPU computes)" if machine.device_is_host else "host",
                "GiB available",
            ),
            "nvme": (machine.nvme_free_bytes, "nvme", f"GiB free in {machine.nvme_path}"),
        }
        for tier, nbytes in need.items():
            have, label, unit = capacity[tier]
            if tier == "nvme" and machine.nvme_path is None:
                out.append("nvme: no nvme_path given")
            elif nbytes > have * frac:
                out.append(
                    f"{label}: {nbytes / GiB:.2f} GiB > {frac:.0%} of {have / GiB:.2f} {unit}"
                )
        return out

    plain, ckpt = problems(act), problems(act_ckpt)
    fits = not ckpt
    needs_ckpt = bool(plain) and fits
    if not fits:
        reasons = tuple(ckpt)
    else:
        reasons = tuple(f"without activation checkpointing: {r}" for r in plain)
    seconds, serial, parts, traffic = _step_time(shape, s, placement, machine, needs_ckpt)
    return PlacementEstimate(
        placement=placement,
        device=TierBytes(items=device),
        host=TierBytes(items=host),
        nvme=TierBytes(items=nvme),
        pinned_bytes=pinned,
        activations=act,
        activations_checkpointed=act_ckpt,
        overhead=overhead_for(act_ckpt if needs_ckpt else act),
        needed=needs(act_ckpt),
        fits=fits,
        needs_checkpointing=needs_ckpt,
        reasons=reasons,
        seconds=seconds,
        serial_seconds=serial,
        time_parts=parts,
        nvme_bytes_per_step=traffic,
    )


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Every placement's estimate and the recommended one (None when none fits)."""

    shape: ModelShape
    machine: MachineFacts
    settings: PlanSettings
    estimates: tuple[PlacementEstimate, ...]
    recommended: PlacementEstimate | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (schema ``tiermem.plan/1``)."""
        return {
            "schema": "tiermem.plan/1",
            "model": {
                "name": self.shape.name,
                "num_params": self.shape.num_params,
                "largest_group": self.shape.largest_group,
                "hidden_size": self.shape.hidden_size,
                "num_layers": self.shape.num_layers,
                "seq_len": self.settings.seq_len or self.shape.seq_len,
                "vocab_size": self.shape.vocab_size,
            },
            "machine": self.machine.as_dict(),
            "settings": {
                "world_size": self.settings.world_size,
                "ranks_per_host": self.settings.ranks_per_host,
                "micro_batch_size": self.settings.micro_batch_size,
                "gradient_accumulation_steps": self.settings.gradient_accumulation_steps,
                "dtype_bytes": self.settings.dtype_bytes,
                "memory_fraction": self.settings.memory_fraction,
            },
            "placements": [e.as_dict() for e in self.estimates],
            "recommended": None if self.recommended is None else self.recommended.as_dict(),
        }


def plan(shape: ModelShape, machine: MachineFacts, settings: PlanSettings) -> Plan:
    """Estimate every allowed placement; recommend the fastest that fits (the least offload
    among equally fast ones)."""
    estimates = tuple(estimate(shape, machine, settings, p) for p in settings.placements)
    fitting = [e for e in estimates if e.fits]
    best = None
    for e in fitting:  # in PLACEMENTS order: less offload first
        if best is None or e.seconds < best.seconds * (1 - 1e-9) or math.isnan(best.seconds):
            best = e
    return Plan(
        shape=shape, machine=machine, settings=settings, estimates=estimates, recommended=best
    )


def recommended_config(result: Plan, *, aio: dict | None = None) -> dict[str, Any] | None:
    """The recommended placement as a DeepSpeed-style config (keys of docs/config.md)."""
    e = result.recommended
    if e is None:
        return None
    s, shape = result.settings, result.shape
    largest = max(_shards(shape, s.world_size))
    nvme_path = result.machine.nvme_path
    param: dict[str, Any] = {"device": e.placement.param_device}
    opt: dict[str, Any] = {"device": e.placement.optimizer_device}
    if param["device"] == "nvme":
        param.update(
            nvme_path=nvme_path,
            pin_memory=s.pin_memory,
            buffer_count=s.param_buffer_count,
            buffer_size=largest,
        )
    if opt["device"] != "none":
        opt["pin_memory"] = s.pin_memory
    if opt["device"] == "nvme":
        opt.update(nvme_path=nvme_path, buffer_count=s.optimizer_buffer_count)
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": s.micro_batch_size,
        "gradient_accumulation_steps": s.gradient_accumulation_steps,
        "bf16": {"enabled": s.dtype_bytes == 2},
        "zero_optimization": {
            "stage": 3,
            "offload_param": param,
            "offload_optimizer": opt,
            "sub_group_size": s.sub_group_size,
            "stage3_prefetch_bucket_size": s.prefetch_bucket_size,
            "stage3_param_persistence_threshold": s.param_persistence_threshold,
        },
    }
    if s.sub_group_split_params:
        config["zero_optimization"]["sub_group_split_params"] = True
    if aio and e.placement.uses_nvme:
        config["aio"] = dict(aio)
    return config
