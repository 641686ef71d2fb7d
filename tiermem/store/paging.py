"""The paging machinery of the store: loads into a tier, write-backs to NVMe,
eviction and prefetch.

[Note: all bookkeeping here runs on the caller's thread, inside store calls.
The transfers run in the native I/O engines and on the CUDA side stream, the
CRC32Cs on the store's checksum thread (:mod:`tiermem.store.checksums`); the store
notices that they finished when it is next called (:meth:`Pager._pump`) or
when the caller waits. So no lock is needed, and a transfer that must wait for
another (a device copy staged through host memory, a read into room that a
write-back is freeing) starts at the first store call after its predecessor
finished. Completion times in the trace are therefore when the store saw them.]
"""

from __future__ import annotations

import time

from tiermem.checksum import crc32c
from tiermem.store.checksums import ChecksumWorker
from tiermem.store.config import StoreConfig
from tiermem.store.errors import StoreBudgetError, StoreCorruptionError, StoreError
from tiermem.store.eviction import Rank, VictimHeaps
from tiermem.store.nvme import Extent, NvmeTier
from tiermem.store.readahead import ReadAhead
from tiermem.store.records import CopyRecord, EntryRecord, FlushOp, LoadOp
from tiermem.store.residency import plan_keeps
from tiermem.store.schedule import PrefetchSchedule
from tiermem.store.states import Residency, TierKind, check_transition
from tiermem.store.telemetry import StoreTelemetry
from tiermem.store.tiers import DeviceTier, HostTier, MemoryTier

R = Residency
MEMORY_TIERS = (TierKind.DEVICE, TierKind.HOST)
_INF = float("inf")
#: refusals a prefetch by the prediction looks past for a clean victim (see Pager._victim)
_PREDICTED_SKIPS = 16


# [Note: copies already resident add nothing to the bytes ahead, so with most
#  of the schedule resident a walk would pass over all of it on every fetch
#  (O(n^2) per pass). It stops after this many; a copy further on is
#  prefetched by a later walk, once the fetches before it have been made.]
MAX_RESIDENT_LOOKAHEAD = 256


class Pager:
    """Moves copies between tiers. :class:`~tiermem.store.TensorStore` adds
    the public operations on top."""

    cfg: StoreConfig
    schedule: PrefetchSchedule
    telemetry: StoreTelemetry
    _device: DeviceTier
    _host: HostTier
    _nvme: NvmeTier | None
    _entries: dict[str, EntryRecord]
    _resident: dict[TierKind, dict[str, EntryRecord]]
    _loads: list[LoadOp]
    _flushes: list[FlushOp]
    _write_errors: list[StoreError]
    _keep_plan: tuple[tuple[int, int], list[bool]] | None = None
    _victim_heaps: VictimHeaps | None = None
    _checksums: ChecksumWorker
    readahead: ReadAhead

    def _mem(self, kind: TierKind) -> MemoryTier:
        return self._device if kind is TierKind.DEVICE else self._host

    # ---- state changes ----
    def _set(self, e: EntryRecord, c: CopyRecord, new: Residency) -> None:
        if c.state is new:
            return
        check_transition(e.name, c.tier, c.state, new)
        c.state = new
        if new is R.ABSENT:
            self._resident[c.tier].pop(e.name, None)
            c.prefetched = False
        else:
            self._resident[c.tier][e.name] = e
            self._touch(e, c)

    def _free_copy(self, e: EntryRecord, c: CopyRecord) -> None:
        """Free a copy's memory and mark it ABSENT."""
        self._set(e, c, R.ABSENT)
        if c.block is not None:
            self._mem(c.tier).free_block(c.block)
            c.block = None

    def _copy_now(self, e: EntryRecord, dst: CopyRecord, src: CopyRecord) -> None:
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

    def _start_flush(self, e: EntryRecord, c: CopyRecord, *, evict: bool) -> FlushOp:
        """Start writing host copy ``c`` of NVMe-homed ``e`` to a new extent."""
        assert self._nvme is not None and c.block is not None and c.tier is TierKind.HOST
        extent = self._nvme.allocate(e.nbytes, e.name)
        flush = FlushOp(e, c, extent, None, evict, time.perf_counter())
        if self.cfg.checksum and c.refs:
            # [Note: a copy the caller holds may change while it is written; its
            #  CRC is taken before the write is issued, so _changed_in_flight
            #  compares with the bytes the write started from and a changed
            #  copy's extent is dropped instead of recorded with a CRC of newer
            #  bytes than the disk holds.]
            flush.checksum = self._checksums.now(c.block.data[: e.nbytes])
        try:
            flush.pending = self._nvme.submit_write(extent, c.block.data[: extent.length])
        except OSError as exc:
            self._nvme.release(extent)
            raise self._io_error("writing", e, extent, exc) from exc
        if self.cfg.checksum and flush.checksum is None:
            # computed while the disk writes (see tiermem.store.checksums)
            flush.checksum = self._checksums.submit(c.block.data[: e.nbytes])
        self._set(e, c, R.EVICTING if evict else R.FLUSHING)
        nv = e.copies[TierKind.NVME]
        if nv.state is R.ABSENT:
            self._set(e, nv, R.LOADING)
        c.flush = flush
        self._flushes.append(flush)
        return flush

    def _io_error(self, what: str, e: EntryRecord, extent: Extent, exc: OSError) -> StoreError:
        assert self._nvme is not None
        return StoreError(
            f"{what} tensor {e.name!r} ({e.nbytes} bytes, extent of {extent.length} at "
            f"{extent.offset}) in {exc.filename or self._nvme.files_of(extent)} failed: "
            f"{exc.strerror or exc}; the tensor's previous copy is intact"
        )

    def _finish_flush(self, f: FlushOp) -> None:
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
        if f.checksum is not None:
            f.crc, seconds = f.checksum.result()
            f.checksum = None
            self.telemetry.checksum(e.nbytes, seconds)
        nv = e.copies[TierKind.NVME]
        if error is None and self._changed_in_flight(f):
            # [Note: the copy was fetched while it was written (write_back of a
            #  copy another holder has) and changed meanwhile: the new extent
            #  may hold a mix of old and new bytes, so it is dropped and the
            #  copy stays dirty; the previous extent stays the tensor's.]
            self._nvme.release(f.extent)
            self._set(e, c, R.DIRTY)
            if nv.state is R.LOADING:
                self._set(e, nv, R.ABSENT)
            return
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
        for t in MEMORY_TIERS:
            o = e.copies[t]
            if o is not c and o.state is R.DIRTY:
                self._set(e, o, R.CLEAN)
        if f.evict:
            self._set(e, c, R.ABSENT)
            self._free_copy(e, c)
            self.telemetry.evictions[TierKind.HOST] += 1
        else:
            self._set(e, c, R.CLEAN)

    def _changed_in_flight(self, f: FlushOp) -> bool:
        """Whether a held copy's bytes differ from those its write started with."""
        c = f.copy
        if not c.refs or f.crc is None or c.block is None:
            return False
        return crc32c(c.block.data[: f.entry.nbytes]) != f.crc

    def _wait_flush(self, f: FlushOp | None, *, raise_error: bool = True) -> None:
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
    def _start_load(self, e: EntryRecord, tier: TierKind, *, distance: int | None) -> LoadOp | None:
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
        load = LoadOp(
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

    def _issue(self, load: LoadOp) -> None:
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

    def _fail_load(self, load: LoadOp, error: BaseException) -> None:
        load.error = error
        load.finished = True
        e, c = load.entry, load.copy
        if c.prefetched:
            # [Note: nobody waits on a prefetch yet; its error is kept for the
            #  fetch that would have used it, so an I/O error or corruption is
            #  never hidden by the fetch quietly reading again.]
            c.failed = error
        if load in self._loads:
            self._loads.remove(load)
        c.load = None
        if load.source is not None:
            load.source.holds -= 1
            self._touch(e, load.source)
            load.source = None
        self._free_copy(e, c)

    def _finish_load(self, load: LoadOp, *, block: bool = True) -> bool:
        """Complete a load whose transfers are done: check, verify, change state.

        Without ``block``, returns False while the verification is still running.
        """
        if load.finished:
            return True
        e, c = load.entry, load.copy
        if load.checksum is None:
            error = None
            for r in load.pending:
                try:
                    r.wait()
                except OSError as exc:
                    error = error or exc
            if error is not None:
                assert e.extent is not None
                self._fail_load(load, self._io_error("reading", e, e.extent, error))
                return True
        assert c.block is not None
        if load.src is TierKind.NVME and self.cfg.checksum and e.crc is not None:
            if load.checksum is None:  # verified beside the caller (tiermem.store.checksums)
                load.checksum = self._checksums.submit(c.block.data[: e.nbytes])
            if not block and not load.checksum.done():
                return False
            got, seconds = load.checksum.result()
            self.telemetry.checksum(e.nbytes, seconds)
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
                return True
        load.finished = True
        self._loads.remove(load)
        c.load = None
        if load.source is not None:
            load.source.holds -= 1
            self._touch(e, load.source)
            load.source = None
        self._set(e, c, R.DIRTY if load.dirty else R.CLEAN)
        if load.src is TierKind.NVME:
            self.readahead.on_read(e.nbytes, time.perf_counter() - load.started)
        self.telemetry.transfer(
            load.src, c.tier, e.name, e.nbytes, load.started, time.perf_counter()
        )
        return True

    def _poll_load(self, load: LoadOp) -> bool:
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
            return self._finish_load(load, block=False)
        return False

    def _wait_load(self, load: LoadOp) -> None:
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

    def _pump(self, *, report: bool = True) -> None:
        """Take note of finished transfers. Failed write-behinds are raised
        here with ``report`` (the first; their copies stay dirty), else kept
        for the next call that reports.

        [Note: only calls that have changed nothing yet report (fetch,
        register, write_back): raised from release, an unrelated write's error
        left the caller unsure whether its release happened, and the engine
        released the same tensor twice.]
        """
        for load in list(self._loads):
            self._poll_load(load)
        for f in list(self._flushes):
            if all(r.done() for r in f.pending) and (f.checksum is None or f.checksum.done()):
                self._finish_flush(f)
                if f.error is not None:
                    self._write_errors.append(f.error)
        if report and self._write_errors:
            error = self._write_errors[0]
            self._write_errors.clear()
            raise error

    # ---- room ----
    def _touch(self, e: EntryRecord, c: CopyRecord) -> None:
        """Note that ``c``'s place in the victim order, or whether it has one, may have
        changed (tiermem.store.eviction)."""
        if c.tier in MEMORY_TIERS:
            self._victim_order().push(e, c, self._rank(e, c))

    def _victim_order(self) -> VictimHeaps:
        basis = (self.schedule.usable, self.schedule.version)
        order = self._victim_heaps
        if order is None or order.basis != basis:
            order = self._victim_heaps = VictimHeaps(basis)
            for tier in MEMORY_TIERS:
                for e in self._resident[tier].values():
                    order.push(e, e.copies[tier], self._rank(e, e.copies[tier]))
        return order

    def _rank(self, e: EntryRecord, c: CopyRecord) -> Rank | None:
        """``c``'s place in its tier's victim order (smaller goes first); None when it
        cannot be evicted now.

        [Note: with a schedule, the copies the write-behind plan keeps until
        their next fetch go last, then the farthest needed first (Belady).
        The plan's replay of Belady alone can settle into a cycle longer
        than one pass (four tensors through room for two keep a different
        one each pass): ranking by the plan first makes every pass repeat
        the plan, so what it did not write behind is not evicted.]
        """
        tier = c.tier
        usable = self.schedule.usable
        # [Note: with a schedule, a copy being written behind stays a candidate:
        #  it is the one the write-behind plan expects to go, and evicting
        #  another in its place would break the plan (an extra read, and a
        #  write at eviction). _make_room waits for its write on demand.]
        evictable = (R.CLEAN, R.DIRTY, R.FLUSHING) if usable else (R.CLEAN, R.DIRTY)
        if e.home is tier or c.state not in evictable or c.refs or c.pins or c.holds:
            return None
        if not usable:
            return (False, 0.0, c.last_use)
        nu = self.schedule.next_use((e.name, tier))
        far = _INF if nu is None else float(self.schedule.replayed + nu)
        kept = tier is TierKind.HOST and self._kept_until_next_fetch(e)
        return (kept, -far, c.last_use)

    def _victim(
        self,
        tier: TierKind,
        distance: int | None,
        keep: CopyRecord | None,
        stuck: list[CopyRecord],
    ) -> tuple[EntryRecord, CopyRecord] | None:
        """The next copy to evict from ``tier`` for a demand fetch (``distance`` None)
        or a prefetch needed in ``distance`` fetches (only copies needed later)."""
        order = self._victim_order()

        def movable(e: EntryRecord, c: CopyRecord) -> bool:
            return c is not keep and not any(c is s for s in stuck)

        if distance is None:
            return order.first(tier, self._rank, accept=movable)
        if self.schedule.usable:
            # read-ahead takes no room the write-behind plan keeps: the kept
            # copies have their own heap, left out
            after = float(self.schedule.replayed + distance)
            return order.first(tier, self._rank, accept=movable, after=after, include_kept=False)
        if self.schedule.predicted is None:
            return None

        # [Note: a prefetch by the caller's prediction evicts only clean copies
        #  the prediction needs later; the demand evictions stay LRU: a guess
        #  that is wrong would make Belady evict what is needed next, and reads
        #  cost more than a late prefetch. Without a recording the heaps are in
        #  LRU order and the prediction's next use moves with every fetch, so it
        #  is a filter while popping, not a rank; the copies it refuses go back,
        #  and after _PREDICTED_SKIPS refusals the prefetch waits (it is only a
        #  prefetch), so one costs O(log n), not a scan of every cached copy.]
        def clean_needed_later(e: EntryRecord, c: CopyRecord) -> bool:
            if c.state is not R.CLEAN or not movable(e, c):
                return False
            nu = self.schedule.next_use((e.name, tier))
            return nu is None or nu > distance

        return order.first(
            tier, self._rank, accept=clean_needed_later, max_skipped=_PREDICTED_SKIPS
        )

    def _make_room(
        self,
        tier: TierKind,
        nbytes: int,
        *,
        for_name: str,
        distance: int | None = None,
        keep: CopyRecord | None = None,
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
        stuck: list[CopyRecord] = []  # dirty victims that could not be moved out
        stuck_error: StoreError | None = None
        while mem.free < need:
            evicting = [f for f in self._flushes if f.evict and f.copy.tier is tier]
            pending = sum(f.copy.block.capacity for f in evicting if f.copy.block is not None)
            if mem.free + pending >= need:
                if distance is not None:
                    return False
                self._wait_flush(evicting[0])
                continue
            victim = self._victim(tier, distance, keep, stuck)
            if victim is None:
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
                # copies being written behind become clean (evictable) once written
                behind = [
                    f
                    for f in self._flushes
                    if f.copy.tier is tier and not (f.copy.refs or f.copy.pins or f.copy.holds)
                ]
                if behind:
                    self._wait_flush(behind[0])
                    continue
                err = self._budget_error(tier, need, for_name)
                if stuck_error is not None:
                    raise StoreBudgetError(
                        f"{err}; {len(stuck)} dirty copies could not be moved toward home: "
                        f"{stuck_error}"
                    ) from stuck_error
                raise err
            e, c = victim
            if c.state is R.FLUSHING:
                if distance is not None:
                    return False
                self._wait_flush(c.flush)  # then CLEAN (or DIRTY again if it failed)
                continue
            try:
                self._evict(e, c)
            except StoreError as exc:
                # [Note: a dirty device copy needs host room to go home; when
                #  there is none, another victim may still do.]
                if distance is not None:
                    return False
                if not isinstance(exc, StoreBudgetError):
                    raise
                stuck.append(c)
                stuck_error = exc
        return True

    def _evict(self, e: EntryRecord, c: CopyRecord) -> None:
        """Free ``c``; a dirty host copy starts its write home (freed when done)."""
        if c.state is R.CLEAN:
            self._free_copy(e, c)
            self.telemetry.evictions[c.tier] += 1
            return
        # dirty: write it toward home first
        if c.tier is TierKind.HOST and e.home is TierKind.NVME:
            self._start_flush(e, c, evict=True)
            self.telemetry.eviction_writes += 1
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

    # ---- write-behind ----
    def _write_behind(self, e: EntryRecord, c: CopyRecord) -> None:
        """Start writing a just-released dirty host copy home if it will likely
        be evicted before it is used again, so its eviction later costs nothing.

        [Note: with a schedule: unless the replay of the schedule under the
        eviction rule (:func:`plan_keeps`) keeps the copy resident until its
        next fetch, so state that stays in host memory across passes is not
        rewritten every pass; without one: when the host tier is short of room
        for the prefetch window. A tensor dirtied again while resident (an
        accumulation buffer) is not rewritten each time.]
        """
        if c.tier is not TierKind.HOST or e.home is not TierKind.NVME:
            return
        if c.refs or c.state is not R.DIRTY or c.flush is not None:
            return
        if self.schedule.usable:
            if self._kept_until_next_fetch(e):
                return
        elif self._host.free >= self._host.footprint(e.nbytes) + self.cfg.prefetch_bytes:
            return
        try:
            self._start_flush(e, c, evict=False)
            self.telemetry.write_behinds += 1
        except StoreError:
            pass  # no space now: the eviction retries and reports it

    def _kept_until_next_fetch(self, e: EntryRecord) -> bool:
        """Whether the schedule's replay keeps ``e``'s host copy resident from
        its latest fetch to its next one."""
        sched = self.schedule
        pos = sched.last_fetch((e.name, TierKind.HOST))
        if pos is None:
            return False
        if self._keep_plan is None or self._keep_plan[0] != sched.version:
            self._keep_plan = (sched.version, self._plan_keeps())
        return self._keep_plan[1][pos]

    def _plan_keeps(self) -> list[bool]:
        # [Note: the capacity leaves out the prefetch window (prefetched copies
        #  take their room before the replay's fetch does) and host-homed
        #  tensors, which are never evicted. A plan that keeps too much costs an
        #  eviction that writes (as without a plan); one that keeps too little
        #  costs a write that was not needed.]
        host = self._host
        sizes: dict[tuple[str, TierKind], int] = {}
        homed = 0
        for name, e in self._entries.items():
            if e.home is TierKind.HOST:
                homed += host.footprint(e.nbytes)
            elif e.home is TierKind.NVME:
                sizes[(name, TierKind.HOST)] = host.footprint(e.nbytes)
        capacity = host.budget - self.cfg.prefetch_bytes - homed
        return plan_keeps(self.schedule.entries, sizes, capacity, self.schedule.releases)

    # ---- prefetch ----
    # [Note: the out-of-core pipeline. Bound by NVMe, a pass should take
    #  max(compute, I/O), not their sum, so reads, writes, checksums and the
    #  caller's compute run at once:
    #  - order: every fetch has a place in an order from the first pass on, the
    #    recorded schedule, else the caller's prediction (TensorStore.predict;
    #    the engine predicts forward, backward and the optimizer's sub-groups);
    #  - read-ahead: the reads of the next fetches in that order are in flight
    #    within a window of bytes (tiermem.store.readahead) that grows by the
    #    measured read bandwidth times each wait on a prefetch issued too late,
    #    up to half the host tier; a prefetch evicts only what is needed later;
    #  - write-behind: a dirty copy the schedule's plan will not keep starts its
    #    write when released (_write_behind), so an eviction finds it clean or
    #    being written, not waiting to start; the write is submitted before its
    #    CRC is computed;
    #  - checksums: on the store's checksum thread (tiermem.store.checksums),
    #    beside compute, verified before a read copy becomes valid;
    #  - optimizer: the engine fetches sub-group i + 1 before it updates i and
    #    releases i dirty (NvmeShardOptimizer.step): i + 1 reads while i updates
    #    and i - 1 writes; with an order the window reaches further ahead.
    #  What stays serial: a completion is noticed only at the next store call;
    #  a demand fetch that finds no clean copy to evict waits for a write.]
    def _prefetch(self) -> None:
        """Load upcoming fetches of the schedule (else of the prediction) within
        the read-ahead window."""
        window = self.readahead.window  # measured, see tiermem.store.readahead
        if window <= 0 or not self.schedule.ordered:
            return
        ahead = 0
        passed = 0  # resident copies walked past that this walk did not prefetch
        for distance, (name, tier) in self.schedule.upcoming():
            e = self._entries.get(name)
            if e is None:
                continue
            c = e.copies[tier]
            if c.state.valid or c.state is R.LOADING:
                if c.prefetched:
                    ahead += e.nbytes
                else:
                    passed += 1
                    if passed > MAX_RESIDENT_LOOKAHEAD:
                        break
                continue
            if ahead + e.nbytes > window:
                break
            if c.state is not R.ABSENT or self._start_load(e, tier, distance=distance) is None:
                break
            c.prefetched = True
            self.telemetry.prefetches_issued += 1
            ahead += e.nbytes
