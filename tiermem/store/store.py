"""TensorStore: named flat tensors paged between device, host and NVMe.

Example::

    from tiermem.store import StoreConfig, TensorStore, TierKind

    cfg = StoreConfig(host_bytes=1 << 30, nvme_paths=("/nvme/a", "/nvme/b"))
    with TensorStore(cfg) as store:
        store.register("w1", 1 << 20, torch.float32, init=w1)   # home: NVMe
        store.begin_pass()
        h = store.fetch("w1", TierKind.HOST)                     # async
        t = h.wait()                                             # flat view in host memory
        t.mul_(0.5)
        store.release("w1", dirty=True)                          # written home before eviction
        store.end_pass()                                         # later passes prefetch

Every tensor has one home tier holding its authoritative bytes and at most one
copy in each faster tier. Copies move through the states of
:mod:`tiermem.store.states`, checked on every change. All bookkeeping happens
on the caller's thread; the transfers themselves run in the native I/O engines
(NVMe) and on a CUDA side stream (device), and the store notices their
completion whenever it is called (:meth:`_pump`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from tiermem.aio import AioConfig
from tiermem.checksum import crc32c
from tiermem.store.errors import (
    StoreBudgetError,
    StoreCorruptionError,
    StoreError,
)
from tiermem.store.nvme import Extent, NvmeTier, read_table
from tiermem.store.schedule import PrefetchSchedule
from tiermem.store.states import Residency, TierKind, check_transition
from tiermem.store.telemetry import StoreTelemetry
from tiermem.store.tiers import DTYPES, Block, DeviceTier, HostTier, MemoryTier, dtype_name

R = Residency
_MEMORY_TIERS = (TierKind.DEVICE, TierKind.HOST)
_INF = float("inf")


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Budgets and places of a :class:`TensorStore`.

    Attributes:
        device_bytes: device tier budget (CUDA memory; host memory standing in
            for it on machines without a GPU).
        host_bytes: host tier budget (aligned, optionally pinned buffers).
        nvme_paths: swap directories, one stripe each; empty: no NVMe tier.
        nvme_bytes: NVMe budget, preallocated at open; None: grow on demand
            within the filesystems' free space.
        prefetch_bytes: bytes of upcoming fetches loaded ahead while replaying
            the schedule (at least ~2 x queue_depth x block_size to keep the
            disks busy); 0 turns prefetch off.
        checksum: crc32c every extent on write, verify on read.
        persistent: keep swap files and an allocation table at close and
            reopen them (NVMe-homed tensors only); else files are scratch.
        pin_memory: mlock host buffers (and register them with CUDA).
        aio: I/O engine settings of each swap file.
        stripe_unit: bytes dealt to one swap file before the next.
    """

    device_bytes: int = 0
    host_bytes: int = 1 << 30
    nvme_paths: tuple[str | os.PathLike, ...] = ()
    nvme_bytes: int | None = None
    prefetch_bytes: int = 64 << 20
    checksum: bool = True
    persistent: bool = False
    pin_memory: bool = False
    aio: AioConfig = field(default_factory=AioConfig)
    stripe_unit: int = 1 << 20

    def __post_init__(self) -> None:
        if isinstance(self.nvme_paths, (str, os.PathLike)):
            object.__setattr__(self, "nvme_paths", (self.nvme_paths,))
        else:
            object.__setattr__(self, "nvme_paths", tuple(self.nvme_paths))
        for fname in ("device_bytes", "host_bytes", "prefetch_bytes"):
            v = getattr(self, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"StoreConfig.{fname}: expected an int >= 0, got {v!r}")
        if self.nvme_bytes is not None and (
            isinstance(self.nvme_bytes, bool)
            or not isinstance(self.nvme_bytes, int)
            or self.nvme_bytes < 0
        ):
            raise ValueError(
                f"StoreConfig.nvme_bytes: expected None or an int >= 0, got {self.nvme_bytes!r}"
            )
        if not isinstance(self.aio, AioConfig):
            raise ValueError(f"StoreConfig.aio: expected an AioConfig, got {self.aio!r}")
        u = self.stripe_unit
        if not isinstance(u, int) or u <= 0 or u % 4096:
            raise ValueError(
                f"StoreConfig.stripe_unit: expected a positive multiple of 4096, got {u!r}"
            )
        if self.persistent and not self.nvme_paths:
            raise ValueError("StoreConfig.persistent needs nvme_paths")


# ---------------------------------------------------------------------------
# bookkeeping records


@dataclass(eq=False)
class _Copy:
    tier: TierKind
    state: Residency = R.ABSENT
    block: Block | None = None
    refs: int = 0  # fetched by the caller and not yet released
    pins: int = 0  # explicit pins
    holds: int = 0  # source of an in-flight copy to another tier
    load: _Load | None = None
    flush: _Flush | None = None
    last_use: int = 0
    prefetched: bool = False  # brought in ahead of use, not yet fetched


@dataclass(eq=False)
class _Entry:
    name: str
    dtype: torch.dtype
    numel: int
    nbytes: int
    home: TierKind
    copies: dict[TierKind, _Copy]
    extent: Extent | None = None
    crc: int | None = None


@dataclass(eq=False)
class _Load:
    """Bytes arriving into ``copy`` (``DEVICE`` loads may first stage in HOST: ``dep``)."""

    entry: _Entry
    copy: _Copy
    src: TierKind
    dirty: bool  # filled from a copy newer than home
    started: float
    pending: list = field(default_factory=list)  # AioRequests or Completions
    source: _Copy | None = None  # held until the copy is done
    dep: _Load | None = None
    issued: bool = False
    finished: bool = False
    error: BaseException | None = None


@dataclass(eq=False)
class _Flush:
    """A dirty host copy being written to a new NVMe extent."""

    entry: _Entry
    copy: _Copy
    extent: Extent
    crc: int | None
    evict: bool
    started: float
    pending: list = field(default_factory=list)
    finished: bool = False
    error: BaseException | None = None


class FetchHandle:
    """The result of :meth:`TensorStore.fetch`: poll with :meth:`done`, get the
    tensor with :meth:`wait`. The tensor stays valid (and is never evicted)
    until :meth:`TensorStore.release`."""

    def __init__(self, store: TensorStore, entry: _Entry, copy: _Copy) -> None:
        self._store = store
        self._entry = entry
        self._copy = copy
        self._load = copy.load
        self.name = entry.name
        self.tier = copy.tier

    def done(self) -> bool:
        """True once the bytes are in place (or the load failed)."""
        return self._load is None or self._store._poll_load(self._load)

    def wait(self) -> torch.Tensor:
        """The tensor as a flat view in this tier's memory.

        Raises the load's error (:class:`StoreCorruptionError`, :class:`StoreError`);
        a failed fetch counts as released.
        """
        load = self._load
        if load is not None:
            if not load.finished:
                t0 = time.perf_counter()
                self._store._wait_load(load)
                self._store.telemetry.stall(self.name, t0, time.perf_counter())
            if load.error is not None:
                self._load = None
                self._copy.refs = max(self._copy.refs - 1, 0)
                raise load.error
            self._load = None
        block = self._copy.block
        if block is None or not self._copy.state.valid:
            raise StoreError(f"tensor {self.name!r} in {self.tier.name} was released or dropped")
        return block.view(self._entry.dtype, self._entry.numel)


class TensorStore:
    """Named flat tensors (fp32/bf16/fp16) with a home tier each, fetched into
    faster tiers on demand or ahead of time. See the module docstring."""

    def __init__(self, cfg: StoreConfig) -> None:
        if not isinstance(cfg, StoreConfig):
            raise TypeError(f"expected a StoreConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._closed = True
        self._entries: dict[str, _Entry] = {}
        self._loads: list[_Load] = []
        self._flushes: list[_Flush] = []
        self._resident: dict[TierKind, dict[str, _Entry]] = {t: {} for t in TierKind}
        self._tick = 0
        self.schedule = PrefetchSchedule()
        self._device = DeviceTier(cfg.device_bytes)
        self._host = HostTier(cfg.host_bytes, pin_memory=cfg.pin_memory)
        self._nvme: NvmeTier | None = None
        self.telemetry = StoreTelemetry(self._tier_stats)
        if cfg.nvme_paths:
            self._nvme = NvmeTier(
                cfg.nvme_paths,
                budget=cfg.nvme_bytes,
                stripe_unit=cfg.stripe_unit,
                aio=cfg.aio,
                persistent=cfg.persistent,
            )
        self._closed = False
        if self._nvme is not None and self._nvme.table is not None:
            try:
                self._adopt(self._nvme.table)
            except BaseException:
                # never commit a partly adopted table over the good one
                self._closed = True
                self._nvme.close(remove=False)
                raise

    @classmethod
    def open(cls, cfg: StoreConfig) -> TensorStore:
        """Reopen the persistent store in ``cfg.nvme_paths`` with all its tensors."""
        if not cfg.nvme_paths:
            raise ValueError("TensorStore.open needs nvme_paths")
        first = Path(os.path.abspath(os.fspath(cfg.nvme_paths[0])))
        if read_table(first) is None:
            raise StoreError(f"no store table in {first}: nothing to reopen")
        return cls(replace(cfg, persistent=True))

    def _adopt(self, table: dict) -> None:
        for name, rec in table["tensors"].items():
            dtype = DTYPES[dtype_name(rec["dtype"])]
            numel = int(rec["numel"])
            e = self._new_entry(name, numel, dtype, TierKind.NVME)
            e.extent = Extent(int(rec["offset"]), int(rec["length"]))
            e.crc = rec.get("crc")
            self._set(e, e.copies[TierKind.NVME], R.CLEAN)

    # ---- tiers ----
    def tier(self, kind: TierKind) -> MemoryTier | NvmeTier:
        """The tier object (``.used``, ``.budget``, ``.peak``)."""
        kind = TierKind(kind)
        if kind is TierKind.DEVICE:
            return self._device
        if kind is TierKind.HOST:
            return self._host
        if self._nvme is None:
            raise StoreError("this store has no NVMe tier (StoreConfig.nvme_paths is empty)")
        return self._nvme

    def _tier_stats(self) -> dict[str, dict[str, int]]:
        out = {t.value: self.tier(t).stats() for t in _MEMORY_TIERS}
        if self._nvme is not None and self._nvme.stripes:
            out[TierKind.NVME.value] = self._nvme.stats()
        return out

    def _mem(self, kind: TierKind) -> MemoryTier:
        return self._device if kind is TierKind.DEVICE else self._host

    # ---- state changes ----
    def _set(self, e: _Entry, c: _Copy, new: Residency) -> None:
        if c.state is new:
            return
        check_transition(e.name, c.tier, c.state, new)
        c.state = new
        if new is R.ABSENT:
            self._resident[c.tier].pop(e.name, None)
            c.prefetched = False
        else:
            self._resident[c.tier][e.name] = e

    def _free_copy(self, e: _Entry, c: _Copy) -> None:
        """Free a copy's memory and mark it ABSENT."""
        self._set(e, c, R.ABSENT)
        if c.block is not None:
            self._mem(c.tier).free_block(c.block)
            c.block = None

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _entry(self, name: str) -> _Entry:
        e = self._entries.get(name)
        if e is None:
            raise KeyError(f"no tensor {name!r} in the store")
        return e

    def _new_entry(self, name: str, numel: int, dtype: torch.dtype, home: TierKind) -> _Entry:
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        e = _Entry(name, dtype, numel, nbytes, home, {t: _Copy(t) for t in TierKind})
        self._entries[name] = e
        return e

    # ---- register / drop ----
    def register(
        self,
        name: str,
        numel: int,
        dtype: torch.dtype | str,
        *,
        home: TierKind = TierKind.NVME,
        init: torch.Tensor | None = None,
    ) -> None:
        """Add a tensor of ``numel`` elements, filled from ``init`` (else zeros),
        stored in ``home``. NVMe-homed tensors are written through the host tier
        and are on disk when this returns."""
        self._check_open()
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        if name in self._entries:
            raise StoreError(f"tensor {name!r} is already registered")
        if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
            raise ValueError(f"numel of {name!r}: expected an int >= 0, got {numel!r}")
        dtype = DTYPES[dtype_name(dtype)]
        home = TierKind(home)
        if home is TierKind.NVME and self._nvme is None:
            raise StoreError(f"tensor {name!r}: home NVME needs StoreConfig.nvme_paths")
        if init is not None:
            if not isinstance(init, torch.Tensor):
                raise TypeError(f"init of {name!r}: expected a torch.Tensor, got {type(init)}")
            if init.numel() != numel:
                raise ValueError(f"init of {name!r}: expected {numel} elements, got {init.numel()}")
        self._pump()
        e = self._new_entry(name, numel, dtype, home)
        stage = TierKind.HOST if home is TierKind.NVME else home
        c = e.copies[stage]
        try:
            self._make_room(stage, e.nbytes, for_name=name)
            c.block = self._mem(stage).allocate(e.nbytes, name)
            view = c.block.view(dtype, numel)
            if init is None:
                view.zero_()
            else:
                view.copy_(init.reshape(-1))
            if home is TierKind.NVME:
                self._set(e, c, R.DIRTY)
                flush = self._start_flush(e, c, evict=False)
                self._wait_flush(flush)
            else:
                self._set(e, c, R.CLEAN)
        except BaseException:
            self._free_copy(e, c)
            del self._entries[name]
            raise
        c.last_use = self._next_tick()

    def drop(self, name: str) -> None:
        """Remove a tensor from every tier (it must not be fetched)."""
        self._check_open()
        e = self._entry(name)
        self._settle(e)
        held = [c.tier.name for c in e.copies.values() if c.refs]
        if held:
            raise StoreError(f"cannot drop {name!r}: fetched and not released in {held}")
        for t in _MEMORY_TIERS:
            c = e.copies[t]
            if c.state is not R.ABSENT:
                self._free_copy(e, c)
        if e.extent is not None:
            assert self._nvme is not None
            self._nvme.release(e.extent)
            e.extent = None
        nv = e.copies[TierKind.NVME]
        if nv.state is not R.ABSENT:
            self._set(e, nv, R.ABSENT)
        del self._entries[name]

    def _settle(self, e: _Entry) -> None:
        """Finish every in-flight transfer of ``e`` (errors stay on them)."""
        for t in _MEMORY_TIERS:
            c = e.copies[t]
            if c.load is not None:
                self._wait_load(c.load)
            if c.flush is not None:
                self._wait_flush(c.flush, raise_error=False)

    # ---- fetch / release ----
    def _next_tick(self) -> int:
        self._tick += 1
        return self._tick

    def fetch(self, name: str, tier: TierKind) -> FetchHandle:
        """Start bringing ``name`` into ``tier`` (DEVICE or HOST); returns a handle."""
        self._check_open()
        e = self._entry(name)
        tier = TierKind(tier)
        if tier is TierKind.NVME:
            raise ValueError(f"fetch {name!r}: tier must be DEVICE or HOST, not NVME")
        self._pump()
        self.schedule.observe((name, tier))
        self.telemetry.fetches += 1
        c = e.copies[tier]
        if c.state is R.EVICTING:
            self._wait_flush(c.flush)
        if tier is e.home and any(
            o.state in (R.DIRTY, R.FLUSHING) for o in e.copies.values() if o is not c
        ):
            self._write_back_entry(e, wait=True)
        if c.state.valid or c.state is R.LOADING:
            if c.prefetched:
                self.telemetry.prefetch_hits += 1
            else:
                self.telemetry.cache_hits += 1
        else:
            if self.schedule.usable:
                self.telemetry.prefetch_misses += 1
            self._start_load(e, tier, distance=None)
        c.prefetched = False
        c.refs += 1
        c.last_use = self._next_tick()
        handle = FetchHandle(self, e, c)
        self._prefetch()
        return handle

    def release(self, name: str, *, dirty: bool = False, tier: TierKind | None = None) -> None:
        """The caller is done with a fetched tensor. ``dirty=True``: its contents
        changed; they are written home before the copy is evicted. ``tier`` is
        needed only when the tensor is fetched in more than one tier."""
        self._check_open()
        e = self._entry(name)
        held = [c for c in e.copies.values() if c.refs > 0]
        if tier is not None:
            held = [c for c in held if c.tier is TierKind(tier)]
        if not held:
            where = f" in {TierKind(tier).name}" if tier is not None else ""
            raise StoreError(f"release of {name!r}: it is not fetched{where}")
        if len(held) > 1:
            raise ValueError(
                f"release of {name!r}: fetched in {[c.tier.name for c in held]}; pass tier="
            )
        c = held[0]
        if dirty:
            if c.load is not None:
                self._wait_load(c.load)
            if not c.state.valid:
                raise StoreError(f"release of {name!r} dirty: its load in {c.tier.name} failed")
            self._mark_dirty(e, c)
        c.refs -= 1
        c.last_use = self._next_tick()
        self._pump()
        self._prefetch()

    def _mark_dirty(self, e: _Entry, c: _Copy) -> None:
        """``c`` holds new contents: it becomes DIRTY (unless it is home) and
        every other cached copy is refreshed (if in use) or dropped."""
        self._settle(e)
        if c.tier is not e.home:
            if c.state is R.CLEAN:
                self._set(e, c, R.DIRTY)
        for t in _MEMORY_TIERS:
            o = e.copies[t]
            if o is c or t is e.home or not o.state.valid:
                continue
            if o.refs or o.pins or o.holds:
                self._copy_now(e, o, c)
                self._set(e, o, R.CLEAN if c.tier is e.home else R.DIRTY)
            else:
                self._free_copy(e, o)

    def _copy_now(self, e: _Entry, dst: _Copy, src: _Copy) -> None:
        """Synchronous copy between the memory tiers."""
        assert dst.block is not None and src.block is not None
        t0 = time.perf_counter()
        if src.tier is dst.tier:
            raise AssertionError("one copy per tier")
        if dst.tier is TierKind.DEVICE:
            self._device.copy_in(dst.block, src.block).wait()
        else:
            self._device.copy_out(dst.block, src.block).wait()
        self.telemetry.transfer(src.tier, dst.tier, e.name, e.nbytes, t0, time.perf_counter())

    # ---- pins ----
    def pin(self, name: str, tier: TierKind) -> None:
        """Never evict ``name`` from ``tier`` until :meth:`unpin` (counts nest)."""
        self._check_open()
        tier = TierKind(tier)
        if tier is TierKind.NVME:
            raise ValueError(f"pin {name!r}: NVMe copies are never evicted; pin DEVICE or HOST")
        self._entry(name).copies[tier].pins += 1

    def unpin(self, name: str, tier: TierKind) -> None:
        self._check_open()
        c = self._entry(name).copies[TierKind(tier)]
        if c.pins == 0:
            raise StoreError(f"unpin {name!r} in {TierKind(tier).name}: it is not pinned")
        c.pins -= 1

    # ---- passes ----
    def begin_pass(self) -> None:
        """Start a pass over the access schedule (the first one records it)."""
        self._check_open()
        self.schedule.begin_pass()
        self._prefetch()

    def end_pass(self) -> None:
        """End a pass; completes the recording on the first pass."""
        self._check_open()
        self.schedule.end_pass()
        self._pump()
        self._prefetch()

    # ---- write-back ----
    def write_back(self, name: str | None = None) -> None:
        """Write dirty copies home (one tensor or all); returns when durable
        there (fsynced and in the committed table in persistent mode)."""
        self._check_open()
        self._pump()
        entries = [self._entry(name)] if name is not None else list(self._entries.values())
        flushes = [f for e in entries if (f := self._write_back_entry(e, wait=False))]
        first_error = None
        for f in flushes:
            try:
                self._wait_flush(f)
            except StoreError as exc:
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        if self.cfg.persistent:
            self._commit()

    def _write_back_entry(self, e: _Entry, *, wait: bool) -> _Flush | None:
        self._settle(e)
        dirty = [e.copies[t] for t in _MEMORY_TIERS if e.copies[t].state is R.DIRTY]
        if not dirty:
            return None
        if e.home is TierKind.NVME:
            host = e.copies[TierKind.HOST]
            if host.state is not R.DIRTY:
                # a dirty device copy: stage it in host memory first
                dev = e.copies[TierKind.DEVICE]
                self._make_room(TierKind.HOST, e.nbytes, for_name=e.name, keep=host)
                host.block = self._host.allocate(e.nbytes, e.name)
                dev.holds += 1
                try:
                    self._copy_now(e, host, dev)
                finally:
                    dev.holds -= 1
                self._set(e, host, R.DIRTY)
            flush = self._start_flush(e, host, evict=False)
            if wait:
                self._wait_flush(flush)
            return flush
        home = e.copies[e.home]
        for c in dirty:
            self._copy_now(e, home, c)
            self._set(e, c, R.CLEAN)
        self.telemetry.write_backs += 1
        return None

    def _start_flush(self, e: _Entry, c: _Copy, *, evict: bool) -> _Flush:
        """Start writing host copy ``c`` of NVMe-homed ``e`` to a new extent."""
        assert self._nvme is not None and c.block is not None and c.tier is TierKind.HOST
        extent = self._nvme.allocate(e.nbytes, e.name)
        crc = None
        if self.cfg.checksum:
            t0 = time.perf_counter()
            crc = crc32c(c.block.data[: e.nbytes])
            self.telemetry.checksum(e.nbytes, time.perf_counter() - t0)
        flush = _Flush(e, c, extent, crc, evict, time.perf_counter())
        try:
            flush.pending = self._nvme.submit_write(extent, c.block.data[: extent.length])
        except OSError as exc:
            self._nvme.release(extent)
            raise self._io_error("writing", e, extent, exc) from exc
        self._set(e, c, R.EVICTING if evict else R.FLUSHING)
        nv = e.copies[TierKind.NVME]
        if nv.state is R.ABSENT:
            self._set(e, nv, R.LOADING)
        c.flush = flush
        self._flushes.append(flush)
        return flush

    def _io_error(self, what: str, e: _Entry, extent: Extent, exc: OSError) -> StoreError:
        assert self._nvme is not None
        return StoreError(
            f"{what} tensor {e.name!r} ({e.nbytes} bytes, extent of {extent.length} at "
            f"{extent.offset}) in {exc.filename or self._nvme.files_of(extent)} failed: "
            f"{os.strerror(exc.errno) if exc.errno else exc}; the tensor's previous copy is intact"
        )

    def _finish_flush(self, f: _Flush) -> None:
        if f.finished:
            return
        f.finished = True
        self._flushes.remove(f)
        e, c = f.entry, f.copy
        assert self._nvme is not None
        c.flush = None
        error = None
        for r in f.pending:
            try:
                r.wait()
            except OSError as exc:
                error = error or exc
        nv = e.copies[TierKind.NVME]
        if error is not None:
            self._nvme.release(f.extent)
            self._set(e, c, R.DIRTY)
            if nv.state is R.LOADING:
                self._set(e, nv, R.ABSENT)
            f.error = self._io_error("writing", e, f.extent, error)
            return
        if e.extent is not None:
            self._nvme.release(e.extent)
        e.extent, e.crc = f.extent, f.crc
        self._set(e, nv, R.CLEAN)
        self.telemetry.transfer(
            TierKind.HOST, TierKind.NVME, e.name, e.nbytes, f.started, time.perf_counter()
        )
        self.telemetry.write_backs += 1
        for t in _MEMORY_TIERS:
            o = e.copies[t]
            if o is not c and o.state is R.DIRTY:
                self._set(e, o, R.CLEAN)
        if f.evict:
            self._set(e, c, R.ABSENT)
            self._free_copy(e, c)
            self.telemetry.evictions[TierKind.HOST] += 1
        else:
            self._set(e, c, R.CLEAN)

    def _wait_flush(self, f: _Flush | None, *, raise_error: bool = True) -> None:
        if f is None:
            return
        for r in f.pending:
            try:
                r.wait()
            except OSError:
                pass
        self._finish_flush(f)
        if raise_error and f.error is not None:
            raise f.error

    # ---- loads ----
    def _start_load(self, e: _Entry, tier: TierKind, *, distance: int | None) -> _Load | None:
        """Begin filling the ABSENT copy of ``e`` in ``tier``.

        ``distance`` is None for a demand fetch (makes room or raises); for a
        prefetch, the fetches until its use: only copies needed later are
        evicted for it, and None is returned when it cannot start now.
        """
        c = e.copies[tier]
        prefetch = distance is not None
        host = e.copies[TierKind.HOST]
        # choose the source
        if tier is TierKind.HOST:
            dev = e.copies[TierKind.DEVICE]
            if dev.state in (R.CLEAN, R.DIRTY, R.FLUSHING):
                source, src = dev, TierKind.DEVICE
            elif e.home is TierKind.NVME and e.copies[TierKind.NVME].state is R.CLEAN:
                source, src = None, TierKind.NVME
            elif prefetch:
                return None
            else:
                raise StoreError(f"tensor {e.name!r} has no readable copy to fetch from")
        else:
            if host.state is R.EVICTING:
                if prefetch:
                    return None
                self._wait_flush(host.flush)
            source, src = host, TierKind.HOST
        if not self._make_room(tier, e.nbytes, for_name=e.name, distance=distance, keep=c):
            return None
        dep = None
        if src is TierKind.HOST:
            if host.state is R.ABSENT:  # stage through host memory
                dep = self._start_load(e, TierKind.HOST, distance=distance)
                if dep is None:
                    return None
            elif host.state is R.LOADING:
                dep = host.load
        block = self._mem(tier).allocate(e.nbytes, e.name)
        load = _Load(
            e,
            c,
            src,
            dirty=source is not None and source.state in (R.DIRTY, R.FLUSHING),
            started=time.perf_counter(),
        )
        c.block = block
        self._set(e, c, R.LOADING)
        c.load = load
        if source is not None:
            source.holds += 1
            load.source = source
        load.dep = dep
        self._loads.append(load)
        if dep is None:
            self._issue(load)
        return load

    def _issue(self, load: _Load) -> None:
        """Submit the transfer of a load whose source is ready."""
        e, c = load.entry, load.copy
        assert c.block is not None
        load.issued = True
        load.started = time.perf_counter()
        try:
            if load.src is TierKind.NVME:
                assert self._nvme is not None and e.extent is not None
                load.pending = self._nvme.submit_read(e.extent, c.block.data[: e.extent.length])
            elif c.tier is TierKind.DEVICE:
                src = load.source
                assert src is not None and src.block is not None
                load.dirty = src.state in (R.DIRTY, R.FLUSHING)
                load.pending = [self._device.copy_in(c.block, src.block)]
            else:
                src = load.source
                assert src is not None and src.block is not None
                load.pending = [self._device.copy_out(c.block, src.block)]
        except OSError as exc:
            assert e.extent is not None
            self._fail_load(load, self._io_error("reading", e, e.extent, exc))

    def _fail_load(self, load: _Load, error: BaseException) -> None:
        load.error = error
        load.finished = True
        e, c = load.entry, load.copy
        if load in self._loads:
            self._loads.remove(load)
        c.load = None
        if load.source is not None:
            load.source.holds -= 1
            load.source = None
        self._free_copy(e, c)

    def _finish_load(self, load: _Load) -> None:
        """Complete a load whose transfers are done: check, verify, change state."""
        if load.finished:
            return
        e, c = load.entry, load.copy
        error = None
        for r in load.pending:
            try:
                r.wait()
            except OSError as exc:
                error = error or exc
        if error is not None:
            assert e.extent is not None
            self._fail_load(load, self._io_error("reading", e, e.extent, error))
            return
        assert c.block is not None
        if load.src is TierKind.NVME and self.cfg.checksum and e.crc is not None:
            t0 = time.perf_counter()
            got = crc32c(c.block.data[: e.nbytes])
            self.telemetry.checksum(e.nbytes, time.perf_counter() - t0)
            if got != e.crc:
                assert self._nvme is not None and e.extent is not None
                self._fail_load(
                    load,
                    StoreCorruptionError(
                        f"tensor {e.name!r}: checksum mismatch reading {e.nbytes} bytes from "
                        f"{self._nvme.files_of(e.extent)} (extent at {e.extent.offset}): "
                        f"stored crc32c {e.crc:08x}, read {got:08x}"
                    ),
                )
                return
        load.finished = True
        self._loads.remove(load)
        c.load = None
        if load.source is not None:
            load.source.holds -= 1
            load.source = None
        self._set(e, c, R.DIRTY if load.dirty else R.CLEAN)
        self.telemetry.transfer(
            load.src, c.tier, e.name, e.nbytes, load.started, time.perf_counter()
        )

    def _poll_load(self, load: _Load) -> bool:
        """Advance ``load`` without blocking; True once finished."""
        if load.finished:
            return True
        if load.dep is not None and not load.issued:
            if not self._poll_load(load.dep):
                return False
            if load.dep.error is not None:
                self._fail_load(load, load.dep.error)
                return True
            self._issue(load)
            if load.finished:
                return True
        if all(r.done() for r in load.pending):
            self._finish_load(load)
            return True
        return False

    def _wait_load(self, load: _Load) -> None:
        if load.finished:
            return
        if load.dep is not None and not load.issued:
            self._wait_load(load.dep)
            if load.dep.error is not None:
                self._fail_load(load, load.dep.error)
                return
            self._issue(load)
            if load.finished:
                return
        for r in load.pending:
            try:
                r.wait()
            except OSError:
                pass
        self._finish_load(load)

    def _pump(self) -> None:
        """Take note of finished transfers. Flush errors surface here."""
        for load in list(self._loads):
            self._poll_load(load)
        errors = []
        for f in list(self._flushes):
            if all(r.done() for r in f.pending):
                self._finish_flush(f)
                if f.error is not None:
                    errors.append(f.error)
        if errors:
            raise errors[0]

    # ---- room ----
    def _victims(
        self, tier: TierKind, distance: int | None, keep: _Copy | None
    ) -> list[tuple[_Entry, _Copy]]:
        usable = self.schedule.usable
        out = []
        for e in self._resident[tier].values():
            c = e.copies[tier]
            if (
                c is keep
                or e.home is tier
                or c.state not in (R.CLEAN, R.DIRTY)
                or c.refs
                or c.pins
                or c.holds
            ):
                continue
            if usable:
                nu = self.schedule.next_use((e.name, tier))
                far = _INF if nu is None else nu
                if distance is not None and far <= distance:
                    continue
                out.append((-far, c.last_use, e, c))
            else:
                if distance is not None:
                    continue
                out.append((0, c.last_use, e, c))
        out.sort(key=lambda v: (v[0], v[1]))
        return [(e, c) for _, _, e, c in out]

    def _make_room(
        self,
        tier: TierKind,
        nbytes: int,
        *,
        for_name: str,
        distance: int | None = None,
        keep: _Copy | None = None,
    ) -> bool:
        """Evict from ``tier`` until ``nbytes`` fit. Demand (``distance`` None):
        waits for write-backs and raises :class:`StoreBudgetError` if it cannot.
        Prefetch: never waits; False if the room is not there now."""
        mem = self._mem(tier)
        need = mem.footprint(nbytes)
        if need > mem.budget:
            if distance is not None:
                return False
            raise self._budget_error(tier, need, for_name)
        while mem.free < need:
            evicting = [f for f in self._flushes if f.evict and f.copy.tier is tier]
            pending = sum(f.copy.block.capacity for f in evicting if f.copy.block is not None)
            if mem.free + pending >= need:
                if distance is not None:
                    return False
                self._wait_flush(evicting[0])
                continue
            victims = self._victims(tier, distance, keep)
            if not victims:
                if distance is not None:
                    return False
                if evicting:
                    self._wait_flush(evicting[0])
                    continue
                # copies still arriving for a prefetch become evictable once done
                loading = [
                    x.copies[tier].load
                    for x in self._resident[tier].values()
                    if x.copies[tier].state is R.LOADING
                    and not (x.copies[tier].refs or x.copies[tier].pins or x.copies[tier].holds)
                    and x.copies[tier] is not keep
                ]
                if loading:
                    self._wait_load(loading[0])
                    continue
                raise self._budget_error(tier, need, for_name)
            e, c = victims[0]
            self._evict(e, c)
        return True

    def _evict(self, e: _Entry, c: _Copy) -> None:
        """Free ``c``; a dirty host copy starts its write home (freed when done)."""
        if c.state is R.CLEAN:
            self._free_copy(e, c)
            self.telemetry.evictions[c.tier] += 1
            return
        # dirty: write it toward home first
        if c.tier is TierKind.HOST and e.home is TierKind.NVME:
            self._start_flush(e, c, evict=True)
            return
        self._set(e, c, R.EVICTING)
        try:
            if e.home is TierKind.NVME:  # device copy: demote into host memory
                host = e.copies[TierKind.HOST]
                if host.state is R.ABSENT:
                    self._make_room(TierKind.HOST, e.nbytes, for_name=e.name, keep=host)
                    host.block = self._host.allocate(e.nbytes, e.name)
                    self._copy_now(e, host, c)
                    self._set(e, host, R.DIRTY)
            else:
                self._copy_now(e, e.copies[e.home], c)
        except BaseException:
            self._set(e, c, R.DIRTY)
            raise
        self._free_copy(e, c)
        self.telemetry.evictions[c.tier] += 1

    def _budget_error(self, tier: TierKind, need: int, name: str) -> StoreBudgetError:
        mem = self._mem(tier)
        pinned = in_use = flight = 0
        for e in self._resident[tier].values():
            c = e.copies[tier]
            size = c.block.capacity if c.block is not None else 0
            if c.pins or e.home is tier:
                pinned += size
            elif c.refs or c.holds:
                in_use += size
            elif c.state in (R.LOADING, R.EVICTING, R.FLUSHING):
                flight += size
        return StoreBudgetError(
            f"{tier.name} tier cannot fit {need} bytes for tensor {name!r}: budget {mem.budget} "
            f"bytes, {mem.used} in use ({pinned} pinned or home, {in_use} fetched and not "
            f"released, {flight} in flight)"
        )

    # ---- prefetch ----
    def _prefetch(self) -> None:
        """Load upcoming fetches of the schedule within ``prefetch_bytes`` ahead."""
        window = self.cfg.prefetch_bytes
        if window <= 0 or not self.schedule.usable:
            return
        ahead = 0
        for distance, (name, tier) in self.schedule.upcoming():
            e = self._entries.get(name)
            if e is None:
                continue
            c = e.copies[tier]
            if c.state.valid or c.state is R.LOADING:
                if c.prefetched:
                    ahead += e.nbytes
                continue
            if ahead + e.nbytes > window:
                break
            if c.state is not R.ABSENT or self._start_load(e, tier, distance=distance) is None:
                break
            c.prefetched = True
            self.telemetry.prefetches_issued += 1
            ahead += e.nbytes

    # ---- persistence / close ----
    def _commit(self) -> None:
        assert self._nvme is not None
        tensors = {
            e.name: {
                "dtype": dtype_name(e.dtype),
                "numel": e.numel,
                "offset": e.extent.offset,
                "length": e.extent.length,
                "crc": e.crc,
            }
            for e in self._entries.values()
            if e.home is TierKind.NVME and e.extent is not None
        }
        self._nvme.commit(tensors)

    def names(self) -> list[str]:
        """Registered tensor names, in registration order."""
        return list(self._entries)

    def info(self, name: str) -> dict:
        """dtype, numel, home and per-tier state of a tensor."""
        e = self._entry(name)
        return {
            "dtype": e.dtype,
            "numel": e.numel,
            "nbytes": e.nbytes,
            "home": e.home,
            "states": {t: e.copies[t].state for t in TierKind},
            "pinned": {t: e.copies[t].pins for t in _MEMORY_TIERS},
            "extent": None if e.extent is None else (e.extent.offset, e.extent.length),
            "crc": e.crc,
        }

    def close(self) -> None:
        """Finish transfers, write back and commit (persistent mode), free
        memory and remove scratch files. Idempotent."""
        if self._closed:
            return
        try:
            for load in list(self._loads):
                self._wait_load(load)
            for f in list(self._flushes):
                self._wait_flush(f, raise_error=False)
            if self.cfg.persistent:
                self.write_back()
        finally:
            self._closed = True
            for e in self._entries.values():
                for t in _MEMORY_TIERS:
                    c = e.copies[t]
                    if c.block is not None:
                        self._mem(t).free_block(c.block)
                        c.block = None
            if self._nvme is not None:
                self._nvme.close(remove=not self.cfg.persistent)
            self._host.close()

    def __enter__(self) -> TensorStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
