"""Section 2 of ``bench/gpu_check.py``: NVMe -> pinned host -> GPU transfer rates and back.

tiermem's path: an :class:`~tiermem.aio.AioFile` reads into (writes from)
buffers of a :class:`~tiermem.buffers.HostBufferPool` registered with
``cudaHostRegister``, and torch copies those buffers to (from) the GPU on a
side stream ordered with CUDA events. Each leg is set against a plain
PyTorch or Python way of moving the same bytes:

=================  ==========================================  ===================================
leg                tiermem                                     baseline
=================  ==========================================  ===================================
nvme_write         AioFile write from a pool buffer + fsync    file.write, torch.save (+ fsync)
nvme_read          AioFile read into a pool buffer             file.readinto; torch.load
h2d / d2h          registered buffer, side stream              torch pinned tensor ``.to("cuda")``
nvme_to_gpu        chunked reads overlapped with H2D copies    torch.load + ``.to("cuda")``
gpu_to_nvme        chunked D2H copies overlapped with writes   ``.cpu()`` + torch.save + fsync
=================  ==========================================  ===================================

Without CUDA (``use_cuda=False``) the GPU legs are skipped and the chunked
pipelines copy into a host tensor instead, so the ordering and buffer reuse
of the pipeline are still exercised and checked byte for byte.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

MIB = 1 << 20


@dataclass(frozen=True, kw_only=True)
class TransferConfig:
    """What section 2 moves and where."""

    directory: Path
    nbytes: int = 2048 * MIB
    chunk_bytes: int = 64 * MIB
    buffers: int = 4
    repeats: int = 5
    block_size: int = 1 * MIB
    queue_depth: int = 32
    use_cuda: bool = True
    drop_caches: bool = False

    def __post_init__(self) -> None:
        if self.nbytes <= 0 or self.nbytes % 4096:
            raise ValueError(
                f"TransferConfig.nbytes: expected a positive multiple of 4096, got {self.nbytes}"
            )
        if self.chunk_bytes <= 0 or self.chunk_bytes % 4096:
            raise ValueError(
                "TransferConfig.chunk_bytes: expected a positive multiple of 4096, "
                f"got {self.chunk_bytes}"
            )
        if self.buffers < 2:
            raise ValueError(f"TransferConfig.buffers: expected at least 2, got {self.buffers}")
        if self.repeats < 1:
            raise ValueError(f"TransferConfig.repeats: expected at least 1, got {self.repeats}")


def gbps(nbytes: int, seconds: float) -> float:
    """Decimal GB/s (10^9 bytes per second)."""
    return nbytes / seconds / 1e9 if seconds > 0 else float("nan")


def drop_file_cache(path: Path, *, system: bool = False) -> None:
    """Evict ``path`` from the page cache (fadvise DONTNEED); with ``system`` also write 3 to
    /proc/sys/vm/drop_caches (root only; used on the lent GPU machine, never in tests)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if system:
        try:
            os.sync()
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError:
            pass


def fill_pattern(t: torch.Tensor, *, seed: int = 7) -> None:
    """Fill a uint8 tensor with random bytes (16 MiB generated, then repeated, each copy
    offset by its index so no two chunks are equal)."""
    gen = torch.Generator().manual_seed(seed)
    piece = min(t.numel(), 16 * MIB)
    head = torch.randint(0, 256, (piece,), dtype=torch.uint8, generator=gen)
    for i, lo in enumerate(range(0, t.numel(), piece)):
        hi = min(t.numel(), lo + piece)
        t[lo:hi].copy_(head[: hi - lo])
        t[lo : lo + 1].fill_(i % 256)


class _Clock:
    """Times a leg: CUDA events on ``stream`` when given, else the wall clock."""

    def __init__(self, stream=None) -> None:
        self.stream = stream

    def time(self, fn: Callable[[], None]) -> float:
        if self.stream is None:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record(self.stream)
        with torch.cuda.stream(self.stream):
            fn()
        end.record(self.stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def _median_rate(nbytes: int, times: list[float]) -> float:
    return gbps(nbytes, statistics.median(times))


def pipeline_read(file, buffers: list, dest: torch.Tensor, chunk: int, stream=None) -> None:
    """Read ``dest.numel()`` bytes of ``file`` into ``dest`` (on the GPU, or the CPU when
    ``stream`` is None) through ``buffers`` in ``chunk``-byte pieces.

    [Note: up to len(buffers) reads are in flight; chunk i's H2D copy is queued
    on ``stream`` as soon as its read completes, and a buffer is read into again
    only after the event recorded behind its previous copy has fired, so reads
    of later chunks overlap the copies of earlier ones.]
    """
    n = dest.numel()
    count = -(-n // chunk)
    k = len(buffers)
    events: list = [None] * k
    reads: dict[int, object] = {}

    def issue(i: int) -> None:
        slot = i % k
        if events[slot] is not None:
            events[slot].synchronize()
            events[slot] = None
        length = min(chunk, n - i * chunk)
        reads[i] = file.submit_read(buffers[slot].tensor()[:length], offset=i * chunk)

    for i in range(min(k, count)):
        issue(i)
    for i in range(count):
        reads.pop(i).wait()
        slot, lo = i % k, i * chunk
        length = min(chunk, n - lo)
        src = buffers[slot].tensor()[:length]
        if stream is None:
            dest[lo : lo + length].copy_(src)
        else:
            with torch.cuda.stream(stream):
                dest[lo : lo + length].copy_(src, non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(stream)
            events[slot] = ev
        if i + k < count:
            issue(i + k)
    if stream is not None:
        stream.synchronize()


def pipeline_write(file, buffers: list, src: torch.Tensor, chunk: int, stream=None) -> None:
    """Write ``src`` (GPU, or CPU when ``stream`` is None) to ``file`` through ``buffers``,
    then fsync.

    [Note: the D2H copy of chunk i is queued before chunk i-1's write is
    submitted (after waiting for i-1's copy event), so copies and writes
    overlap; a buffer is copied into again only after its previous write
    completed.]
    """
    n = src.numel()
    count = -(-n // chunk)
    k = len(buffers)
    writes: list = [None] * k
    queued: tuple[int, object] | None = None

    def submit(i: int, ev) -> None:
        if ev is not None:
            ev.synchronize()
        slot, lo = i % k, i * chunk
        length = min(chunk, n - lo)
        writes[slot] = file.submit_write(buffers[slot].tensor()[:length], offset=lo)

    for i in range(count):
        slot, lo = i % k, i * chunk
        length = min(chunk, n - lo)
        if writes[slot] is not None:
            writes[slot].wait()
            writes[slot] = None
        dst = buffers[slot].tensor()[:length]
        ev = None
        if stream is None:
            dst.copy_(src[lo : lo + length])
        else:
            with torch.cuda.stream(stream):
                dst.copy_(src[lo : lo + length], non_blocking=True)
                ev = torch.cuda.Event()
                ev.record(stream)
        if queued is not None:
            submit(*queued)
        queued = (i, ev)
    if queued is not None:
        submit(*queued)
    for req in writes:
        if req is not None:
            req.wait()
    file.sync()


def _plain_write(path: Path, host: torch.Tensor) -> None:
    with open(path, "wb", buffering=0) as f:
        view = memoryview(host.numpy()).cast("B")
        done = 0
        while done < len(view):
            done += f.write(view[done:])
        os.fsync(f.fileno())


def _plain_read(path: Path, host: torch.Tensor) -> None:
    with open(path, "rb", buffering=0) as f:
        view = memoryview(host.numpy()).cast("B")
        done = 0
        while done < len(view):
            got = f.readinto(view[done:])
            if not got:
                raise OSError(f"{path}: short read at byte {done} of {len(view)}")
            done += got


def _torch_save(path: Path, t: torch.Tensor) -> None:
    torch.save(t, path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TransferRun:
    """Runs the legs in order; each adds ``{leg: {tool: GB/s}}`` to :attr:`rates`."""

    def __init__(self, cfg: TransferConfig, *, deadline: float) -> None:
        self.cfg = cfg
        self.deadline = deadline
        self.rates: dict[str, dict[str, float]] = {}
        self.facts: dict[str, object] = {}
        self.skipped: list[str] = []

    def _rate(self, leg: str, tool: str, value: float) -> None:
        self.rates.setdefault(leg, {})[tool] = round(value, 3)

    def _time_left(self, leg: str) -> bool:
        if time.monotonic() < self.deadline:
            return True
        self.skipped.append(f"{leg}: section time budget spent")
        return False

    def run(self) -> dict:
        """Every leg; returns the section's JSON."""
        from tiermem.aio import AioConfig, AioFile
        from tiermem.buffers import HostBufferPool

        cfg = self.cfg
        cfg.directory.mkdir(parents=True, exist_ok=True)
        n, chunk = cfg.nbytes, min(cfg.chunk_bytes, cfg.nbytes)
        budget = 2 * n + cfg.buffers * chunk
        pool = self._pool(HostBufferPool, budget)
        src_buf, back_buf = pool.allocate(n), pool.allocate(n)
        bufs = [pool.allocate(chunk) for _ in range(cfg.buffers)]
        src, back = src_buf.tensor(), back_buf.tensor()
        fill_pattern(src)
        tm_path = cfg.directory / "gpu_check_tiermem.bin"
        plain_path = cfg.directory / "gpu_check_plain.bin"
        pt_path = cfg.directory / "gpu_check_torch.pt"
        aio = AioConfig(block_size=cfg.block_size, queue_depth=cfg.queue_depth)
        try:
            with AioFile(tm_path, "w+", config=aio) as f:
                self.facts.update(backend=f.backend, direct=f.direct, reason=f.reason)
                self._nvme_legs(f, src, back, tm_path, plain_path, pt_path)
                if cfg.use_cuda:
                    self._gpu_legs(src)
                else:
                    self.skipped.append("h2d, d2h: no CUDA (pipelines copy to a host tensor)")
                self._pipelines(f, bufs, src, tm_path, pt_path, chunk)
        finally:
            for p in (tm_path, plain_path, pt_path):
                p.unlink(missing_ok=True)
        return {"rates_gbps": self.rates, "facts": self.facts, "skipped": self.skipped}

    def _pool(self, pool_cls, budget: int):
        if not self.cfg.use_cuda:
            self.facts["pinned"] = False
            return pool_cls(budget, pin=False)
        try:
            pool = pool_cls(budget, pin=True)
            probe = pool.allocate(4096)  # registration happens at allocation
            probe.release()
            self.facts["pinned"] = True
            return pool
        except (MemoryError, RuntimeError, ValueError) as exc:
            self.facts["pinned"] = False
            self.facts["pin_error"] = f"{type(exc).__name__}: {exc}"
            return pool_cls(budget, pin=False)

    def _drop(self, path: Path) -> None:
        drop_file_cache(path, system=self.cfg.drop_caches)

    def _nvme_legs(self, f, src, back, tm_path, plain_path, pt_path) -> None:
        n = src.numel()
        clock = _Clock()
        f.allocate(n)
        self._rate(
            "nvme_write", "tiermem", gbps(n, clock.time(lambda: (f.write(src, 0), f.sync())))
        )
        self._drop(tm_path)
        back.zero_()
        self._rate("nvme_read", "tiermem", gbps(n, clock.time(lambda: f.read_into(back, 0))))
        if not torch.equal(src, back):
            raise AssertionError(f"{tm_path}: bytes read back differ from those written")
        self.facts["verified_nvme_read"] = True
        if not self._time_left("nvme baselines"):
            return
        self._rate(
            "nvme_write", "python", gbps(n, clock.time(lambda: _plain_write(plain_path, src)))
        )
        self._drop(plain_path)
        back.zero_()
        self._rate(
            "nvme_read", "python", gbps(n, clock.time(lambda: _plain_read(plain_path, back)))
        )
        if not torch.equal(src, back):
            raise AssertionError(f"{plain_path}: bytes read back differ from those written")
        plain_path.unlink()
        self._rate(
            "nvme_write", "torch.save", gbps(n, clock.time(lambda: _torch_save(pt_path, src)))
        )
        self._drop(pt_path)
        loaded: list[torch.Tensor] = []
        self._rate(
            "nvme_read",
            "torch.load",
            gbps(n, clock.time(lambda: loaded.append(torch.load(pt_path)))),
        )
        if not torch.equal(src, loaded.pop()):
            raise AssertionError(f"{pt_path}: torch.load returned other bytes")

    def _gpu_legs(self, src: torch.Tensor) -> None:
        n, reps = src.numel(), self.cfg.repeats
        side = torch.cuda.Stream()
        dev = torch.empty(n, dtype=torch.uint8, device="cuda")
        tm, cur = _Clock(side), _Clock(torch.cuda.current_stream())
        # tiermem: the registered pool buffer, copies on the side stream
        h2d = [tm.time(lambda: dev.copy_(src, non_blocking=True)) for _ in range(reps)]
        self._rate("h2d", "tiermem", _median_rate(n, h2d))
        d2h = [tm.time(lambda: src.copy_(dev, non_blocking=True)) for _ in range(reps)]
        self._rate("d2h", "tiermem", _median_rate(n, d2h))
        # torch: its own pinned allocation, on the current stream
        pinned = torch.empty(n, dtype=torch.uint8, pin_memory=True)
        pinned.copy_(src)
        h2d = [cur.time(lambda: pinned.to("cuda", non_blocking=True)) for _ in range(reps)]
        self._rate("h2d", "torch pinned", _median_rate(n, h2d))
        d2h = [cur.time(lambda: pinned.copy_(dev, non_blocking=True)) for _ in range(reps)]
        self._rate("d2h", "torch pinned", _median_rate(n, d2h))
        pageable = torch.empty(n, dtype=torch.uint8)
        h2d = [cur.time(lambda: dev.copy_(pageable)) for _ in range(max(1, reps // 2))]
        self._rate("h2d", "torch pageable", _median_rate(n, h2d))
        d2h = [cur.time(lambda: pageable.copy_(dev)) for _ in range(max(1, reps // 2))]
        self._rate("d2h", "torch pageable", _median_rate(n, d2h))
        self.facts["d2h_pageable_gbps"] = self.rates["d2h"]["torch pageable"]
        torch.cuda.synchronize()

    def _pipelines(self, f, bufs, src, tm_path, pt_path, chunk) -> None:
        if not self._time_left("pipelines"):
            return
        n, cuda = src.numel(), self.cfg.use_cuda
        stream = torch.cuda.Stream() if cuda else None
        device = "cuda" if cuda else "cpu"
        ref = src.to(device)
        leg_in, leg_out = (
            ("nvme_to_gpu", "gpu_to_nvme") if cuda else ("nvme_to_host", "host_to_nvme")
        )
        dest = torch.zeros(n, dtype=torch.uint8, device=device)

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        self._drop(tm_path)
        t0 = time.perf_counter()
        pipeline_read(f, bufs, dest, chunk, stream)
        sync()
        self._rate(leg_in, "tiermem", gbps(n, time.perf_counter() - t0))
        if not torch.equal(dest, ref):
            raise AssertionError(f"{leg_in}: the chunked pipeline delivered other bytes")
        self.facts[f"verified_{leg_in}"] = True
        t0 = time.perf_counter()
        pipeline_write(f, bufs, ref, chunk, stream)
        self._rate(leg_out, "tiermem", gbps(n, time.perf_counter() - t0))
        self._drop(tm_path)
        dest.zero_()
        pipeline_read(f, bufs, dest, chunk, stream)
        sync()
        if not torch.equal(dest, ref):
            raise AssertionError(f"{leg_out}: the chunked pipeline wrote other bytes")
        self.facts[f"verified_{leg_out}"] = True
        if not self._time_left("pipeline baselines"):
            return
        del dest
        t0 = time.perf_counter()
        host = ref.cpu()
        _torch_save(pt_path, host)
        self._rate(leg_out, "torch", gbps(n, time.perf_counter() - t0))
        del host
        self._drop(pt_path)
        t0 = time.perf_counter()
        got = torch.load(pt_path).to(device)
        sync()
        self._rate(leg_in, "torch", gbps(n, time.perf_counter() - t0))
        if not torch.equal(got, ref):
            raise AssertionError(f"{leg_in}: torch.load + .to delivered other bytes")
