"""Streaming inference (ZeRO-Inference): run a model whose weights live on NVMe
or in host memory, one unit (e.g. one transformer block) at a time.

Example::

    from tiermem.inference import InferenceConfig, StreamingModel
    from tiermem.store import StoreConfig
    from tiermem.train.models import GPT, preset

    model = GPT(preset("small"))                      # or weights= a safetensors file
    cfg = InferenceConfig(store=StoreConfig(host_bytes=8 << 20, nvme_paths=("/nvme/swap",)))
    with StreamingModel(model, cfg) as streamed:
        logits = streamed(input_ids)                   # one forward pass
        tokens = streamed.generate(input_ids, max_new_tokens=32)   # greedy
        print(streamed.report.tokens_per_second, streamed.report.io_wait_fraction)

The model is cut into *units*: by default every element of each
``nn.ModuleList``/``nn.Sequential`` (a GPT's blocks), and every other module
that owns parameters directly (embeddings, the final norm, the head). Each
unit's parameters are packed into one flat tensor of the tiered store
(:mod:`tiermem.store`) with an NVMe (or host) home, and the module's
parameters become empty placeholders. A forward pre-hook fetches a unit's
tensors into the compute tier (host on CPU machines, device with CUDA) and
points the parameters at them; the forward hook points them back at the
placeholders and releases the tensors. Every call is one store pass: the
first records the order of fetches, later ones replay it, so the store
prefetches the next units while the current one computes and evicts the copy
needed farthest in the future; the host and device budgets only have to hold
the largest unit (plus what prefetch may use), not the model.

[Note: the weights are read, never written, so nothing is dirty and eviction
never writes. Parameters must be used inside their own module's forward (a
model that reads ``self.lm_head.weight`` from another module's forward sees
the empty placeholder).]
"""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tiermem.store import StoreConfig, TensorStore, TierKind
from tiermem.store.tiers import DTYPES

__all__ = [
    "InferenceConfig",
    "InferenceError",
    "InferenceReport",
    "StreamingModel",
    "default_units",
]

# [Note: each parameter starts 64 bytes into its unit's flat tensor (the
#  blocks themselves are 4 KiB-aligned), the alignment torch's own allocator
#  gives, so vectorised kernels see the same alignment as in the plain model
#  and the results stay bit-identical.]
_PARAM_ALIGN_BYTES = 64
_ROOT = "(root)"


class InferenceError(ValueError):
    """Bad input to streaming inference; the message names the unit, parameter,
    file or field and what was expected."""


@dataclass(frozen=True, kw_only=True)
class InferenceConfig:
    """How a :class:`StreamingModel` places and streams the weights.

    Attributes:
        store: budgets and swap directories of the tiered store it creates
            (``host_bytes``, ``device_bytes``, ``nvme_paths``, ``prefetch_bytes``).
        home: where the weights live: ``TierKind.NVME`` (default when
            ``store.nvme_paths`` is given) or ``TierKind.HOST``.
        compute_tier: where a unit's weights are fetched for its forward:
            ``TierKind.DEVICE`` (default when CUDA is available; on CPU-only
            machines the store's host-memory stand-in) or ``TierKind.HOST``
            (default otherwise).
        units: module names (as in ``named_modules()``) streamed as one unit
            each; None: :func:`default_units`. Parameters outside every unit
            form one unit per module that owns them.
        weights: a safetensors file to read the parameters from, tensor by
            tensor (the module's own parameters may then be on the meta
            device); None: the module's own parameters.
    """

    store: StoreConfig
    home: TierKind | None = None
    compute_tier: TierKind | None = None
    units: tuple[str, ...] | None = None
    weights: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.store, StoreConfig):
            raise InferenceError(
                f"InferenceConfig.store: expected a StoreConfig, got {type(self.store).__name__}"
            )
        for fname in ("home", "compute_tier"):
            value = getattr(self, fname)
            if value is None:
                continue
            try:
                object.__setattr__(self, fname, TierKind(value))
            except ValueError:
                raise InferenceError(
                    f"InferenceConfig.{fname}: expected a TierKind, got {value!r}"
                ) from None
        if self.home is TierKind.DEVICE:
            raise InferenceError("InferenceConfig.home: expected NVME or HOST, got DEVICE")
        if self.compute_tier is TierKind.NVME:
            raise InferenceError("InferenceConfig.compute_tier: expected DEVICE or HOST, got NVME")
        if self.home is TierKind.NVME and not self.store.nvme_paths:
            raise InferenceError(
                "InferenceConfig.home is NVME but StoreConfig.nvme_paths is empty: "
                "give the swap directories"
            )
        if self.units is not None:
            if isinstance(self.units, str) or not all(isinstance(u, str) for u in self.units):
                raise InferenceError(
                    "InferenceConfig.units: expected a sequence of module names, "
                    f"got {self.units!r}"
                )
            object.__setattr__(self, "units", tuple(self.units))

    @property
    def resolved_home(self) -> TierKind:
        if self.home is not None:
            return self.home
        return TierKind.NVME if self.store.nvme_paths else TierKind.HOST

    @property
    def resolved_compute_tier(self) -> TierKind:
        if self.compute_tier is not None:
            return self.compute_tier
        return TierKind.DEVICE if torch.cuda.is_available() else TierKind.HOST


@dataclass(frozen=True, kw_only=True)
class InferenceReport:
    """What one :meth:`StreamingModel.forward` or :meth:`~StreamingModel.generate` did.

    ``io_wait_seconds`` is the time the caller stalled waiting for weights to
    arrive (the store's stall time; ``io_wait_fraction`` is it over
    ``seconds``, the call's wall time). ``fetch_seconds`` is all time spent in
    the fetch/release hooks: the stalls plus the store's work on the caller's
    thread (submitting reads, verifying checksums — ``checksum_seconds`` —,
    synchronous copies, bookkeeping).
    """

    passes: int
    tokens: int
    seconds: float
    tokens_per_second: float
    io_wait_seconds: float
    io_wait_fraction: float
    fetch_seconds: float
    checksum_seconds: float = 0.0
    bytes_moved: dict[str, int] = field(default_factory=dict)
    prefetch_hits: int = 0
    prefetch_misses: int = 0
    peak_bytes: dict[str, int] = field(default_factory=dict)
    budget_bytes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passes": self.passes,
            "tokens": self.tokens,
            "seconds": self.seconds,
            "tokens_per_second": self.tokens_per_second,
            "io_wait_seconds": self.io_wait_seconds,
            "io_wait_fraction": self.io_wait_fraction,
            "fetch_seconds": self.fetch_seconds,
            "checksum_seconds": self.checksum_seconds,
            "bytes_moved": dict(self.bytes_moved),
            "prefetch_hits": self.prefetch_hits,
            "prefetch_misses": self.prefetch_misses,
            "peak_bytes": dict(self.peak_bytes),
            "budget_bytes": dict(self.budget_bytes),
        }


class UnitState(enum.Enum):
    """Whether a unit's weights are fetched (its parameters point into the store)."""

    IDLE = "idle"
    HELD = "held"


@dataclass(eq=False)
class _ParamRecord:
    """One distinct parameter: where its bytes are in the store, and its placeholder."""

    param: nn.Parameter
    names: tuple[str, ...]  # every name it has in the module (tied weights have several)
    shape: torch.Size
    store_name: str = ""
    offset: int = 0
    placeholder: torch.Tensor | None = None
    refs: int = 0  # units currently holding it


@dataclass(eq=False)
class _Unit:
    """One streamed module: the store tensors its forward needs."""

    name: str  # store and report name ("(root)" for the model itself)
    path: str  # module path in named_modules() ("" for the model itself)
    module: nn.Module
    params: list[_ParamRecord] = field(default_factory=list)
    owned: list[_ParamRecord] = field(default_factory=list)
    tensors: tuple[str, ...] = ()
    ancestors: list[_Unit] = field(default_factory=list)
    state: UnitState = UnitState.IDLE
    depth: int = 0  # nested calls of the same module


def default_units(module: nn.Module) -> list[str]:
    """Names of the modules streamed one at a time by default: each element (with
    parameters) of the outermost ``nn.ModuleList``/``nn.Sequential`` containers."""
    names: list[str] = []

    def walk(prefix: str, mod: nn.Module) -> None:
        container = isinstance(mod, (nn.ModuleList, nn.Sequential))
        for cname, child in mod.named_children():
            full = f"{prefix}{cname}"
            if container and any(True for _ in child.parameters()):
                names.append(full)
            else:
                walk(full + ".", child)

    walk("", module)
    return names


def _flat_layout(records: Sequence[_ParamRecord], dtype: torch.dtype) -> int:
    """Give each record its offset in one flat tensor; return the element count."""
    align = max(_PARAM_ALIGN_BYTES // dtype.itemsize, 1)
    numel = 0
    for rec in records:
        rec.offset = numel
        numel += -(-rec.shape.numel() // align) * align
    return max(numel, 1)


class StreamingModel:
    """A module whose weights stream through a :class:`~tiermem.store.TensorStore`.

    Construction moves every parameter into the store (the module's
    parameters become empty placeholders; the module is unusable without this
    wrapper and after :meth:`close`). Call it like the module; see the module
    docstring.
    """

    def __init__(self, module: nn.Module, cfg: InferenceConfig) -> None:
        if not isinstance(module, nn.Module):
            raise InferenceError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        if not isinstance(cfg, InferenceConfig):
            raise InferenceError(f"cfg: expected an InferenceConfig, got {type(cfg).__name__}")
        self.module = module
        self.cfg = cfg
        self.home = cfg.resolved_home
        self.compute_tier = cfg.resolved_compute_tier
        self._units = self._build_units(module, cfg.units)
        self._records = list({id(r): r for u in self._units for r in u.params}.values())
        self._layout()
        self._hooks: list[Any] = []
        self._closed = False
        self.store = TensorStore(cfg.store)
        self._fetch_seconds = 0.0
        self.report: InferenceReport | None = None
        try:
            self._check_budgets()
            self.device = self._compute_device()
            self._load_weights()
            module.to(self.device)
            module.eval()
            for unit in self._units:
                self._hooks.append(unit.module.register_forward_pre_hook(self._pre_hook(unit)))
                self._hooks.append(
                    unit.module.register_forward_hook(self._post_hook(unit), always_call=True)
                )
        except BaseException:
            self.close()
            raise

    # ---- construction ----
    @staticmethod
    def _build_units(module: nn.Module, names: Sequence[str] | None) -> list[_Unit]:
        modules = dict(module.named_modules())
        wanted = list(default_units(module) if names is None else names)
        unit_of: dict[int, _Unit] = {}
        for name in wanted:
            mod = modules.get(name)
            if mod is None:
                parent = name.rpartition(".")[0]
                near = [n for n in modules if n and n.rpartition(".")[0] == parent][:8]
                raise InferenceError(
                    f"InferenceConfig.units: no module named {name!r} in the model"
                    + (f" (some that exist: {near})" if near else "")
                )
            if id(mod) not in unit_of:
                unit_of[id(mod)] = _Unit(name=name or _ROOT, path=name, module=mod)
        unit_paths = {u.path: u for u in unit_of.values()}
        records: dict[int, _ParamRecord] = {}
        for mod_name, mod in module.named_modules():
            for pname, param in mod.named_parameters(recurse=False, remove_duplicate=False):
                full = f"{mod_name}.{pname}" if mod_name else pname
                rec = records.get(id(param))
                if rec is None:
                    rec = records[id(param)] = _ParamRecord(param, (full,), param.shape)
                elif full not in rec.names:
                    rec.names += (full,)
                unit = _innermost(unit_paths, mod_name)
                if unit is None:  # parameters outside every unit: their owner is one
                    unit = unit_of.get(id(mod))
                    if unit is None:
                        unit = unit_of[id(mod)] = _Unit(
                            name=mod_name or _ROOT, path=mod_name, module=mod
                        )
                if rec not in unit.params:
                    unit.params.append(rec)
        order = {id(m): i for i, (_, m) in enumerate(module.named_modules())}
        units = sorted((u for u in unit_of.values() if u.params), key=lambda u: order[id(u.module)])
        if not units:
            raise InferenceError("the model has no parameters: nothing to stream")
        for u in units:
            u.ancestors = [a for a in units if a is not u and _is_within(u.path, a.path)]
        return units

    def _layout(self) -> None:
        owner: dict[int, _Unit] = {}
        for unit in self._units:
            for rec in unit.params:
                if id(rec) not in owner:
                    owner[id(rec)] = unit
                    unit.owned.append(rec)
        for rec in self._records:
            if rec.param.dtype not in DTYPES.values():
                raise InferenceError(
                    f"parameter {rec.names[0]!r} has dtype {rec.param.dtype}; the store holds "
                    f"{sorted(DTYPES)} (convert the model first, e.g. model.to(torch.bfloat16))"
                )
        self._tensor_sizes: dict[str, tuple[int, torch.dtype]] = {}
        for unit in self._units:
            dtypes = list(dict.fromkeys(r.param.dtype for r in unit.owned))
            for dtype in dtypes:
                group = [r for r in unit.owned if r.param.dtype is dtype]
                name = unit.name if len(dtypes) == 1 else f"{unit.name}#{dtype}"
                for rec in group:
                    rec.store_name = name
                self._tensor_sizes[name] = (_flat_layout(group, dtype), dtype)
        for unit in self._units:
            unit.tensors = tuple(dict.fromkeys(r.store_name for r in unit.params))

    def _nbytes(self, name: str) -> int:
        numel, dtype = self._tensor_sizes[name]
        return numel * dtype.itemsize

    def _check_budgets(self) -> None:
        """Refuse budgets that cannot hold what must be resident at once."""

        def footprint(names: Sequence[str], tier: TierKind = TierKind.HOST) -> int:
            return sum(self.store.tier(tier).footprint(self._nbytes(n)) for n in names)

        store = self.cfg.store
        total = footprint(list(self._tensor_sizes))
        if self.home is TierKind.HOST and total > store.host_bytes:
            raise InferenceError(
                f"the weights take {total} bytes in host memory, more than "
                f"StoreConfig.host_bytes={store.host_bytes}; with home HOST the whole model "
                "stays in host memory (give nvme_paths to stream it from NVMe)"
            )
        tiers = [self.compute_tier]
        if self.home is TierKind.NVME and self.compute_tier is TierKind.DEVICE:
            tiers.append(TierKind.HOST)  # NVMe -> device loads are staged in host memory
        for unit in self._units:
            names = list(dict.fromkeys(n for u in [*unit.ancestors, unit] for n in u.tensors))
            for tier in tiers:
                if tier is self.home:
                    continue
                need = footprint(names, tier)
                own = footprint(unit.tensors, tier)
                budget = store.device_bytes if tier is TierKind.DEVICE else store.host_bytes
                if need > budget:
                    field_name = "device_bytes" if tier is TierKind.DEVICE else "host_bytes"
                    enclosing = f" + {need - own} of enclosing units" if need > own else ""
                    raise InferenceError(
                        f"unit {unit.name!r} needs {need} bytes in the {tier.name} tier at once "
                        f"(its weights {own} bytes{enclosing}), more than "
                        f"StoreConfig.{field_name}={budget}; raise the budget or stream smaller "
                        "units (InferenceConfig.units)"
                    )

    def _compute_device(self) -> torch.device:
        if self.compute_tier is TierKind.DEVICE:
            return self.store.tier(TierKind.DEVICE).device
        return torch.device("cpu")

    def _load_weights(self) -> None:
        """Register each unit's flat tensors (one unit in memory at a time) and
        turn the parameters into placeholders."""
        source = _SafetensorsSource(self.cfg.weights, self) if self.cfg.weights else None
        try:
            self._check_materialised(source.keys if source is not None else None)
            if source is not None:
                source.check_keys()
            for unit in self._units:
                for name in dict.fromkeys(r.store_name for r in unit.owned):
                    numel, dtype = self._tensor_sizes[name]
                    flat = torch.zeros(numel, dtype=dtype)
                    for rec in unit.owned:
                        if rec.store_name != name:
                            continue
                        dst = flat[rec.offset : rec.offset + rec.shape.numel()].view(rec.shape)
                        if source is not None:
                            dst.copy_(source.read(rec))
                        else:
                            with torch.no_grad():
                                dst.copy_(rec.param.detach())
                    self.store.register(name, numel, dtype, home=self.home, init=flat)
                    del flat
                for rec in unit.owned:
                    self._to_placeholder(rec)
            if source is not None:
                source.load_buffers()
        finally:
            if source is not None:
                source.close()

    def _to_placeholder(self, rec: _ParamRecord) -> None:
        """Point the parameter at an empty tensor on the compute device.

        [Note: a meta parameter cannot take real data (set_data refuses the
        type change), so it is replaced by a new Parameter under every name
        it has; the record keeps the new one.]
        """
        rec.placeholder = torch.empty(0, dtype=rec.param.dtype, device=self.device)
        if not rec.param.is_meta:
            rec.param.data = rec.placeholder
            return
        new = nn.Parameter(rec.placeholder, requires_grad=rec.param.requires_grad)
        for full in rec.names:
            owner, _, leaf = full.rpartition(".")
            setattr(self.module.get_submodule(owner), leaf, new)
        rec.param = new

    def _check_materialised(self, in_file: set[str] | None) -> None:
        """Before anything moves: meta tensors must come from the weights file."""
        if in_file is None:
            for rec in self._records:
                if rec.param.is_meta:
                    raise InferenceError(
                        f"parameter {rec.names[0]!r} is on the meta device: give "
                        "InferenceConfig.weights (a safetensors file) to read it from"
                    )
        for mod_name, mod in self.module.named_modules():
            for bname, buf in mod.named_buffers(recurse=False):
                full = f"{mod_name}.{bname}" if mod_name else bname
                if buf.is_meta and full not in (in_file or ()):
                    raise InferenceError(
                        f"buffer {full!r} is on the meta device and not in the weights file: "
                        "create it before streaming"
                    )

    # ---- hooks ----
    def _pre_hook(self, unit: _Unit) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            self._fetch(unit)

        return hook

    def _post_hook(self, unit: _Unit) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if unit.depth:
                self._release(unit)

        return hook

    def _fetch(self, unit: _Unit) -> None:
        t0 = time.perf_counter()
        handles = []
        try:
            for name in unit.tensors:
                handles.append((name, self.store.fetch(name, self.compute_tier)))
        except BaseException:  # the fetch that raised took no reference; the earlier ones did
            for name, _ in handles:
                self.store.release(name, tier=self.compute_tier)
            raise
        views: dict[str, torch.Tensor] = {}
        for i, (name, handle) in enumerate(handles):
            try:
                views[name] = handle.wait()
            except BaseException:
                # the failed fetch counts as released; the others do not
                for j, (other, _) in enumerate(handles):
                    if j != i:
                        self.store.release(other, tier=self.compute_tier)
                raise
        for rec in unit.params:
            if rec.refs == 0:
                flat = views[rec.store_name]
                rec.param.data = flat[rec.offset : rec.offset + rec.shape.numel()].view(rec.shape)
            rec.refs += 1
        unit.depth += 1
        unit.state = UnitState.HELD
        self._fetch_seconds += time.perf_counter() - t0

    def _release(self, unit: _Unit) -> None:
        t0 = time.perf_counter()
        for rec in unit.params:
            rec.refs -= 1
            if rec.refs == 0:
                rec.param.data = rec.placeholder
        unit.depth -= 1
        if unit.depth == 0:
            unit.state = UnitState.IDLE
        for name in unit.tensors:
            self.store.release(name, tier=self.compute_tier)
        self._fetch_seconds += time.perf_counter() - t0

    # ---- running ----
    def _pass(self, args: tuple, kwargs: dict) -> Any:
        """One forward of the module as one store pass."""
        self._check_open()
        args = tuple(_to_device(a, self.device) for a in args)
        kwargs = {k: _to_device(v, self.device) for k, v in kwargs.items()}
        self.store.begin_pass()
        try:
            with torch.no_grad():
                return self.module(*args, **kwargs)
        finally:
            try:
                for unit in reversed(self._units):  # an exception left units held
                    while unit.depth:
                        self._release(unit)
            finally:
                self.store.end_pass()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module on ``args`` (tensors are moved to the compute device);
        sets :attr:`report` (``tokens``: elements of the first argument when it
        is an integer tensor, else 0)."""
        start = self._begin_report()
        out = self._pass(args, kwargs)
        first = args[0] if args else None
        tokens = (
            first.numel()
            if isinstance(first, torch.Tensor) and not first.is_floating_point()
            else 0
        )
        self.report = self._end_report(start, passes=1, tokens=tokens)
        return out

    __call__ = forward

    def generate(
        self, input_ids: torch.Tensor, max_new_tokens: int, *, max_context: int | None = None
    ) -> torch.Tensor:
        """Greedy decoding: append the argmax of the last position's logits,
        ``max_new_tokens`` times. The module's forward must map (batch, time)
        token ids to (batch, time, vocab) logits.

        [Note: there is no KV cache: each new token runs the whole (cropped)
        sequence through every unit again, so each token costs one full read
        of the weights, which is the case streaming is about.]

        Args:
            input_ids: (batch, time) integer token ids.
            max_new_tokens: tokens to append (>= 0).
            max_context: feed only the last ``max_context`` tokens (a model's
                longest sequence); None feeds them all.

        Returns:
            (batch, time + max_new_tokens) ids on ``input_ids``' device.
        """
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise InferenceError(
                f"input_ids: expected a (batch, time) tensor, got "
                f"{tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else input_ids!r}"
            )
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.shape[1] == 0:
            raise InferenceError(
                f"input_ids: expected integer token ids with time >= 1, got dtype "
                f"{input_ids.dtype} and shape {tuple(input_ids.shape)}"
            )
        for fname, value, low in (
            ("max_new_tokens", max_new_tokens, 0),
            ("max_context", max_context, 1),
        ):
            if value is None and fname == "max_context":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InferenceError(f"{fname}: expected an int >= {low}, got {value!r}")
        start = self._begin_report()
        ids = input_ids.to(self.device)
        for _ in range(max_new_tokens):
            ctx = ids if max_context is None else ids[:, -max_context:]
            logits = self._pass((ctx,), {})
            if (
                not isinstance(logits, torch.Tensor)
                or logits.dim() != 3
                or logits.shape[:2] != ctx.shape
            ):
                got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits)
                raise InferenceError(
                    f"generate needs the module's forward to return (batch, time, vocab) logits "
                    f"for a {tuple(ctx.shape)} input, got {got}"
                )
            next_ids = logits[:, -1, :].argmax(dim=-1, keepdim=True).to(ids.dtype)
            ids = torch.cat([ids, next_ids], dim=1)
        self.report = self._end_report(
            start, passes=max_new_tokens, tokens=max_new_tokens * input_ids.shape[0]
        )
        return ids.to(input_ids.device)

    # ---- reporting ----
    def _begin_report(self) -> tuple[float, dict, float]:
        self._check_open()
        return time.perf_counter(), self.store.telemetry.snapshot(), self._fetch_seconds

    def _end_report(self, start: tuple[float, dict, float], *, passes: int, tokens: int):
        t0, before, fetch0 = start
        seconds = max(time.perf_counter() - t0, 1e-9)
        after = self.store.telemetry.snapshot()
        stall = after["stall_seconds"] - before["stall_seconds"]
        moved = {
            pair: n - before["bytes_moved"].get(pair, 0)
            for pair, n in after["bytes_moved"].items()
            if n - before["bytes_moved"].get(pair, 0)
        }
        tiers = after["tiers"]
        return InferenceReport(
            passes=passes,
            tokens=tokens,
            seconds=seconds,
            tokens_per_second=tokens / seconds,
            io_wait_seconds=stall,
            io_wait_fraction=min(max(stall / seconds, 0.0), 1.0),
            fetch_seconds=self._fetch_seconds - fetch0,
            checksum_seconds=after["checksum_seconds"] - before["checksum_seconds"],
            bytes_moved=moved,
            prefetch_hits=after["prefetch_hits"] - before["prefetch_hits"],
            prefetch_misses=after["prefetch_misses"] - before["prefetch_misses"],
            peak_bytes={t: s["peak"] for t, s in tiers.items() if "peak" in s},
            budget_bytes={t: s["budget"] for t, s in tiers.items() if "budget" in s},
        )

    # ---- introspection / lifetime ----
    @property
    def units(self) -> list[tuple[str, int]]:
        """(name, bytes of its own weights) of every unit, in module order."""
        return [
            (u.name, sum(self._nbytes(n) for n in dict.fromkeys(r.store_name for r in u.owned)))
            for u in self._units
        ]

    @property
    def weight_bytes(self) -> int:
        """Bytes of all weights in the store (padding included)."""
        return sum(self._nbytes(n) for n in self._tensor_sizes)

    def _check_open(self) -> None:
        if self._closed:
            raise InferenceError("this StreamingModel is closed")

    def close(self) -> None:
        """Remove the hooks and close the store (its scratch files go). The
        module keeps its empty placeholders. Idempotent."""
        self._closed = True
        for h in self._hooks:
            h.remove()
        self._hooks = []
        store = getattr(self, "store", None)
        if store is not None:
            store.close()

    def __enter__(self) -> StreamingModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _innermost(units: dict[str, _Unit], mod_name: str) -> _Unit | None:
    """The unit with the longest module path that contains module ``mod_name``."""
    best = None
    for path, unit in units.items():
        if _is_within(mod_name, path) and (best is None or len(path) > len(best.path)):
            best = unit
    return best


def _is_within(mod_name: str, unit_path: str) -> bool:
    """True when module ``mod_name`` is (inside) the module at ``unit_path``."""
    if unit_path == "":
        return True
    return mod_name == unit_path or mod_name.startswith(unit_path + ".")


def _to_device(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


class _SafetensorsSource:
    """Parameters read one at a time from a safetensors file."""

    def __init__(self, path: str | os.PathLike, model: StreamingModel) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise InferenceError(f"InferenceConfig.weights: no file {str(self.path)!r}")
        self.model = model
        try:
            self._file = safe_open(str(self.path), framework="pt")
        except Exception as exc:
            raise InferenceError(
                f"InferenceConfig.weights: {str(self.path)!r} is not a readable safetensors "
                f"file: {exc}"
            ) from exc
        self.keys = set(self._file.keys())

    def _buffers(self) -> dict[str, tuple[nn.Module, str]]:
        out = {}
        for mod_name, mod in self.model.module.named_modules():
            for bname, _ in mod.named_buffers(recurse=False):
                out[f"{mod_name}.{bname}" if mod_name else bname] = (mod, bname)
        return out

    def check_keys(self) -> None:
        """Every parameter is in the file under one of its names; nothing else is."""
        known = set(self._buffers())
        missing = []
        for rec in self.model._records:
            if not any(n in self.keys for n in rec.names):
                missing.append(rec.names[0])
            known.update(rec.names)
        if missing:
            raise InferenceError(
                f"{str(self.path)!r} lacks {len(missing)} parameters of the model: {missing[:5]}"
            )
        unexpected = sorted(self.keys - known)
        if unexpected:
            raise InferenceError(
                f"{str(self.path)!r} has {len(unexpected)} tensors the model does not: "
                f"{unexpected[:5]}"
            )

    def read(self, rec: _ParamRecord) -> torch.Tensor:
        key = next(n for n in rec.names if n in self.keys)
        tensor = self._file.get_tensor(key)
        if tuple(tensor.shape) != tuple(rec.shape):
            raise InferenceError(
                f"{str(self.path)!r}: tensor {key!r} has shape {tuple(tensor.shape)}, the "
                f"model's parameter has {tuple(rec.shape)}"
            )
        return tensor

    def load_buffers(self) -> None:
        """Buffers saved in the file (persistent buffers) replace the module's."""
        for name, (mod, bname) in self._buffers().items():
            if name in self.keys:
                tensor = self._file.get_tensor(name)
                old = getattr(mod, bname)
                if tuple(tensor.shape) != tuple(old.shape):
                    raise InferenceError(
                        f"{str(self.path)!r}: buffer {name!r} has shape {tuple(tensor.shape)}, "
                        f"the model's has {tuple(old.shape)}"
                    )
                setattr(mod, bname, tensor.to(old.dtype))

    def close(self) -> None:
        self._file = None
