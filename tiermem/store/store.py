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
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from tiermem.store.checksums import ChecksumWorker
from tiermem.store.config import StoreConfig
from tiermem.store.errors import StoreError
from tiermem.store.nvme import Extent, NvmeTier, read_table
from tiermem.store.paging import MEMORY_TIERS, Pager
from tiermem.store.readahead import ReadAhead
from tiermem.store.records import CopyRecord, EntryRecord, FlushOp, LoadOp
from tiermem.store.schedule import PrefetchSchedule
from tiermem.store.states import Residency, TierKind
from tiermem.store.telemetry import StoreTelemetry
from tiermem.store.tiers import DTYPES, DeviceTier, HostTier, MemoryTier, dtype_name

R = Residency

__all__ = ["FetchHandle", "StoreConfig", "TensorStore"]


class FetchHandle:
    """The result of :meth:`TensorStore.fetch`: poll with :meth:`done`, get the
    tensor with :meth:`wait`. The tensor stays valid (and is never evicted)
    until :meth:`TensorStore.release`."""

    def __init__(
        self, store: TensorStore, entry: EntryRecord, copy: CopyRecord, *, late: bool = False
    ) -> None:
        self._store = store
        self._late = late  # a prefetch still in flight when fetched
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
                t1 = time.perf_counter()
                self._store.telemetry.stall(self.name, t0, t1)
                if self._late:
                    self._store.readahead.on_late(self._entry.nbytes, t1 - t0)
                    self._store.telemetry.late_prefetches += 1
            if load.error is not None:
                self._load = None
                self._copy.refs = max(self._copy.refs - 1, 0)
                self._store._touch(self._entry, self._copy)
                raise load.error
            self._load = None
        block = self._copy.block
        if block is None or not self._copy.state.valid:
            raise StoreError(f"tensor {self.name!r} in {self.tier.name} was released or dropped")
        return block.view(self._entry.dtype, self._entry.numel)


class TensorStore(Pager):
    """Named flat tensors (fp32/bf16/fp16) with a home tier each, fetched into
    faster tiers on demand or ahead of time. See the module docstring."""

    def __init__(self, cfg: StoreConfig) -> None:
        if not isinstance(cfg, StoreConfig):
            raise TypeError(f"expected a StoreConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._closed = True
        self._pid = os.getpid()
        self._entries: dict[str, EntryRecord] = {}
        self._loads: list[LoadOp] = []
        self._flushes: list[FlushOp] = []
        self._write_errors: list[StoreError] = []
        self._resident: dict[TierKind, dict[str, EntryRecord]] = {t: {} for t in TierKind}
        self._tick = 0
        self.schedule = PrefetchSchedule()
        self._checksums = ChecksumWorker()
        self.readahead = ReadAhead(cfg.prefetch_bytes, cfg.host_bytes // 2)
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
        assert self._nvme is not None
        where = f"store table in {self._nvme.dirs[0]}"
        unverified = []
        for name, rec in table["tensors"].items():
            try:
                dtype = DTYPES[dtype_name(rec.get("dtype"))]
            except (ValueError, TypeError) as exc:
                raise StoreError(f"{where}: tensor {name!r}: {exc}") from None
            numel, crc = rec.get("numel"), rec.get("crc")
            if not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
                raise StoreError(f"{where}: tensor {name!r}: numel {numel!r} is not an int >= 0")
            if crc is not None and (
                not isinstance(crc, int) or isinstance(crc, bool) or not 0 <= crc < 1 << 32
            ):
                raise StoreError(f"{where}: tensor {name!r}: crc {crc!r} is not a CRC32C")
            e = self._new_entry(name, numel, dtype, TierKind.NVME)
            e.extent = Extent(int(rec["offset"]), int(rec["length"]))  # checked by the tier
            if e.nbytes > e.extent.length:
                raise StoreError(
                    f"{where}: tensor {name!r}: {numel} {dtype_name(dtype)} elements "
                    f"({e.nbytes} bytes) do not fit its extent of {e.extent.length} bytes"
                )
            e.crc = crc
            if crc is None:
                unverified.append(name)
            self._set(e, e.copies[TierKind.NVME], R.CLEAN)
        if unverified and self.cfg.checksum:
            # [Note: a record without a CRC (written with checksum off) cannot
            #  be verified when read; said once, naming the tensors.]
            shown = ", ".join(repr(n) for n in unverified[:5])
            more = f" and {len(unverified) - 5} more" if len(unverified) > 5 else ""
            warnings.warn(
                f"{where}: no checksum recorded for tensor(s) {shown}{more} (written with "
                "checksum off); their reads are not verified until they are written again",
                UserWarning,
                stacklevel=3,
            )

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
        out = {t.value: self.tier(t).stats() for t in MEMORY_TIERS}
        if self._nvme is not None and self._nvme.stripes:
            out[TierKind.NVME.value] = self._nvme.stats()
        return out

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def _entry(self, name: str) -> EntryRecord:
        e = self._entries.get(name)
        if e is None:
            raise KeyError(f"no tensor {name!r} in the store")
        return e

    def _new_entry(self, name: str, numel: int, dtype: torch.dtype, home: TierKind) -> EntryRecord:
        nbytes = numel * torch.empty((), dtype=dtype).element_size()
        e = EntryRecord(name, dtype, numel, nbytes, home, {t: CopyRecord(t) for t in TierKind})
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
        self._touch(e, c)

    def drop(self, name: str) -> None:
        """Remove a tensor from every tier (it must not be fetched)."""
        self._check_open()
        e = self._entry(name)
        self._settle(e)
        held = [c.tier.name for c in e.copies.values() if c.refs]
        if held:
            raise StoreError(f"cannot drop {name!r}: fetched and not released in {held}")
        for t in MEMORY_TIERS:
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

    def _settle(self, e: EntryRecord) -> None:
        """Finish every in-flight transfer of ``e`` (errors stay on them)."""
        for t in MEMORY_TIERS:
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
        self._touch(e, c)  # the replay passed a use of it: its next use is a later one
        if c.failed is not None:  # a prefetch of this copy failed: report it here
            error, c.failed = c.failed, None
            raise error
        if c.state in (R.EVICTING, R.FLUSHING):
            # [Note: a copy being written behind (FLUSHING) is not handed out
            #  until the write is done: a caller could change it while it is
            #  written, and a commit would then record an extent whose bytes
            #  do not match the CRC taken when the write started.]
            self._wait_flush(c.flush)
        if tier is e.home and any(
            o.state in (R.DIRTY, R.FLUSHING) for o in e.copies.values() if o is not c
        ):
            self._write_back_entry(e, wait=True)
        late = c.prefetched and c.state is R.LOADING
        if c.state.valid or c.state is R.LOADING:
            if c.prefetched:
                self.telemetry.prefetch_hits += 1
            else:
                self.telemetry.cache_hits += 1
        else:
            if self.schedule.ordered:
                self.telemetry.prefetch_misses += 1
            self.telemetry.demand_loads += 1
            self._start_load(e, tier, distance=None)
        c.prefetched = False
        c.refs += 1
        c.last_use = self._next_tick()
        handle = FetchHandle(self, e, c, late=late)
        self._prefetch()
        return handle

    def release(self, name: str, *, dirty: bool = False, tier: TierKind | None = None) -> None:
        """The caller is done with a fetched tensor. ``dirty=True``: its contents
        changed; they are written home before the copy is evicted (in the
        background right away when it is not needed again soon). ``tier`` is
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
        self.schedule.observe_release((name, c.tier))
        self._touch(e, c)
        self._pump(report=False)
        if c.state is R.DIRTY:  # also the last release of a copy dirtied while shared
            self._write_behind(e, c)
        self._prefetch()

    def _mark_dirty(self, e: EntryRecord, c: CopyRecord) -> None:
        """``c`` holds new contents: it becomes DIRTY (unless it is home) and
        every other cached copy is refreshed (if in use) or dropped."""
        self._settle(e)
        if c.tier is not e.home:
            if c.state is R.CLEAN:
                self._set(e, c, R.DIRTY)
        for t in MEMORY_TIERS:
            o = e.copies[t]
            if o is c or t is e.home or not o.state.valid:
                continue
            if o.refs or o.pins or o.holds:
                self._copy_now(e, o, c)
                self._set(e, o, R.CLEAN if c.tier is e.home else R.DIRTY)
            else:
                self._free_copy(e, o)

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
        self._touch(self._entry(name), c)

    # ---- passes ----
    def predict(self, keys: Sequence[tuple[str, TierKind]]) -> None:
        """The order the caller expects to fetch in, as ``(name, tier)`` pairs.

        Until a pass has recorded the real order (and again after a recording
        is dropped), prefetch and eviction follow this one, so the first passes
        are not stall-bound. It need not be exact: fetches it does not expect
        are ignored by it. An empty list removes it.
        """
        self._check_open()
        order = []
        for name, tier in keys:
            self._entry(name)
            tier = TierKind(tier)
            if tier is TierKind.NVME:
                raise ValueError(f"predict: {name!r} in NVME; fetches are into DEVICE or HOST")
            order.append((name, tier))
        self.schedule.predict(order)
        self._prefetch()

    def begin_pass(self) -> None:
        """Start a pass over the access schedule (the first one records it)."""
        self._check_open()
        self.schedule.begin_pass()
        self._prefetch()

    def end_pass(self) -> None:
        """End a pass; completes the recording on the first pass."""
        self._check_open()
        self.schedule.end_pass()
        self.readahead.end_pass()
        self._pump(report=False)
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

    def _write_back_entry(self, e: EntryRecord, *, wait: bool) -> FlushOp | None:
        self._settle(e)
        dirty = [e.copies[t] for t in MEMORY_TIERS if e.copies[t].state is R.DIRTY]
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
                    self._touch(e, dev)
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
            "pinned": {t: e.copies[t].pins for t in MEMORY_TIERS},
            "extent": None if e.extent is None else (e.extent.offset, e.extent.length),
            "crc": e.crc,
        }

    def close(self) -> None:
        """Finish transfers, write back and commit (persistent mode), free
        memory and remove scratch files. Idempotent."""
        if self._closed:
            return
        if os.getpid() != self._pid:
            # [Note: a forked child that inherited the store (and closes it, or
            #  finalizes it at exit) owns none of its files: writing back or
            #  removing them would corrupt or delete the parent's swap space.]
            self._closed = True
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
            self._checksums.close()
            for e in self._entries.values():
                for t in MEMORY_TIERS:
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
