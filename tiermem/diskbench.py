"""Profile a directory for offload: sequential read/write sweeps over block
size x queue depth x backend, with latency percentiles.

Used by ``tiermem bench``; the JSON it returns is documented in
``docs/bench-schema.md`` (schema ``tiermem.bench/1``).
"""

from __future__ import annotations

import errno as errno_mod
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tiermem.aio import AioConfig, AioFile, probe
from tiermem.buffers import HostBufferPool

SCHEMA = "tiermem.bench/1"
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
# [Note: the buffer is reused for every request of a pass: the disk, not memory
#  bandwidth or page faults, must be what is measured.]
BUFFER_BYTES = 64 * MiB
SPACE_MARGIN = 64 * MiB


class BenchError(Exception):
    """A problem with the directory or the arguments, reported as one line."""


@dataclass(frozen=True, kw_only=True)
class DiskBenchConfig:
    directory: Path
    size: int = GiB
    block_sizes: Sequence[int] = (128 * KiB, 1 * MiB, 4 * MiB)
    queue_depths: Sequence[int] = (4, 16, 32)
    backends: Sequence[str] | None = None  # None: every backend usable here
    rounds: int = 1

    @classmethod
    def quick(cls, directory: Path, size: int | None = None) -> DiskBenchConfig:
        return cls(
            directory=directory,
            size=size or 64 * MiB,
            block_sizes=(256 * KiB, 1 * MiB),
            queue_depths=(8, 32),
            backends=("auto",),
        )


@dataclass
class Measurement:
    backend: str
    block_size: int
    queue_depth: int
    op: str
    bytes: int
    seconds: float
    pieces: int
    latencies_ns: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        lat = self.latencies_ns
        pct = (
            (lambda q: round(float(np.percentile(lat, q)) / 1e3, 1))
            if lat.size
            else (lambda q: None)
        )
        return {
            "backend": self.backend,
            "block_size": self.block_size,
            "queue_depth": self.queue_depth,
            "op": self.op,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 6),
            "gbps": round(self.bytes / self.seconds / 1e9, 4),
            "iops": round(self.pieces / self.seconds, 1),
            "latency_us": {"p50": pct(50), "p99": pct(99), "p999": pct(99.9)},
        }


def mount_of(path: Path) -> tuple[str, str]:
    """(mount point, filesystem type) holding ``path``, from /proc/self/mounts."""
    best = ("/", "unknown")
    real = str(path.resolve())
    try:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mnt = parts[1].replace("\\040", " ")
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(
                    best[0]
                ):
                    best = (mnt, parts[2])
    except OSError:
        pass
    return best


def check_directory(directory: Path, size: int) -> int:
    """Validate the scratch directory; return its free bytes or raise BenchError."""
    try:
        return _check_directory(directory, size)
    except OSError as exc:
        raise BenchError(f"cannot access directory {directory}: {exc.strerror}") from exc


def _check_directory(directory: Path, size: int) -> int:
    if not directory.exists():
        raise BenchError(f"directory {directory} does not exist")
    if not directory.is_dir():
        raise BenchError(f"{directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BenchError(f"directory {directory} is not writable")
    free = shutil.disk_usage(directory).free
    if free < size + SPACE_MARGIN:
        raise BenchError(
            f"not enough free space in {directory}: the benchmark writes {size / MiB:.0f} MiB "
            f"(+{SPACE_MARGIN // MiB} MiB margin), {free / MiB:.0f} MiB free; use --size"
        )
    return free


def usable_backends(o_direct: bool) -> list[str]:
    found = probe()
    out = []
    if found["io_uring"] == "ok":
        out.append("io_uring")
    if found["libaio"] == "ok" and o_direct:
        out.append("libaio")
    out.append("threads")
    return out


def _drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _pass(f: AioFile, op: str, buf, size: int, lat: np.ndarray) -> tuple[float, int]:
    """One sequential pass over the file; returns (seconds, latencies recorded)."""
    f.record_latencies(lat)
    chunk = buf.nbytes
    t0 = time.perf_counter()
    reqs = []
    for off in range(0, size, chunk):
        n = min(chunk, size - off)
        view = buf[:n]
        reqs.append(f.submit_read(view, off) if op == "read" else f.submit_write(view, off))
    for r in reqs:
        r.wait()
    if op == "write":
        f.sync()
    dt = time.perf_counter() - t0
    n_lat = f.latencies_recorded()
    f.record_latencies(None)
    return dt, n_lat


def run(
    cfg: DiskBenchConfig,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Run the sweep and return the result dict (schema ``tiermem.bench/1``)."""
    directory = Path(cfg.directory)
    if cfg.size < 4096 or cfg.size % 4096:
        raise BenchError(f"--size must be a positive multiple of 4 KiB, got {cfg.size}")
    free = check_directory(directory, cfg.size)
    mount, fstype = mount_of(directory)
    path = directory / f".tiermem-bench-{os.getpid()}.tmp"
    pool = HostBufferPool(BUFFER_BYTES + 4096, pin=False)
    hbuf = pool.allocate(min(BUFFER_BYTES, cfg.size))
    buf = hbuf.tensor()
    buf.random_(0, 256)  # incompressible, in case the device compresses
    results: list[Measurement] = []
    try:
        with AioFile(path, "x+", follow_symlinks=False) as probe_file:
            o_direct, o_direct_reason = probe_file.direct, probe_file.reason
            try:
                probe_file.allocate(cfg.size)
            except OSError as exc:
                if exc.errno == errno_mod.ENOSPC:
                    raise BenchError(
                        f"disk full while preallocating {cfg.size} bytes in {directory}"
                    ) from exc
                raise
        backends = list(cfg.backends) if cfg.backends else usable_backends(o_direct)
        combos = [
            (be, bs, qd)
            for _ in range(cfg.rounds)
            for be in backends
            for bs in cfg.block_sizes
            for qd in cfg.queue_depths
        ]
        total = len(combos) * 2
        step = 0
        for be, bs, qd in combos:
            lat = np.zeros(cfg.size // bs + 16, dtype=np.int64)
            with AioFile(
                path,
                "r+",
                config=AioConfig(backend=be, block_size=bs, queue_depth=qd),
                follow_symlinks=False,
            ) as f:
                for op in ("write", "read"):
                    if op == "read" and not f.direct:
                        _drop_cache(path)
                    if on_progress:
                        on_progress(f"{op} {f.backend} bs={bs // KiB}K qd={qd}", step, total)
                    dt, n_lat = _pass(f, op, buf, cfg.size, lat)
                    results.append(
                        Measurement(
                            backend=f.backend,
                            block_size=bs,
                            queue_depth=qd,
                            op=op,
                            bytes=cfg.size,
                            seconds=dt,
                            pieces=n_lat,
                            latencies_ns=lat[:n_lat].copy(),
                        )
                    )
                    step += 1
        if on_progress:
            on_progress("done", total, total)
    finally:
        hbuf.release()
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    rows = [m.to_dict() for m in results]
    return {
        "schema": SCHEMA,
        "directory": str(directory.resolve()),
        "mount_point": mount,
        "filesystem": fstype,
        "o_direct": o_direct,
        "o_direct_reason": o_direct_reason,
        "free_bytes": free,
        "file_size": cfg.size,
        "probe": probe(),
        "results": rows,
        **best_configuration(rows),
    }


def best_configuration(rows: list[dict]) -> dict:
    """The (backend, block size, queue depth) with the best harmonic mean of
    read and write bandwidth, and its DeepSpeed-style ``aio`` section."""
    by_key: dict[tuple, dict[str, list[float]]] = {}
    for r in rows:
        key = (r["backend"], r["block_size"], r["queue_depth"])
        by_key.setdefault(key, {"read": [], "write": []})[r["op"]].append(r["gbps"])
    best_key, best_score, best_rw = None, -1.0, (0.0, 0.0)
    for key, ops in by_key.items():
        if not ops["read"] or not ops["write"]:
            continue
        rd, wr = float(np.median(ops["read"])), float(np.median(ops["write"]))
        score = 2 * rd * wr / (rd + wr) if rd + wr > 0 else 0.0
        if score > best_score:
            best_key, best_score, best_rw = key, score, (rd, wr)
    if best_key is None:
        return {"best": None, "aio_config": None}
    backend, bs, qd = best_key
    return {
        "best": {
            "backend": backend,
            "block_size": bs,
            "queue_depth": qd,
            "read_gbps": round(best_rw[0], 4),
            "write_gbps": round(best_rw[1], 4),
        },
        "aio_config": {
            "aio": {
                "block_size": bs,
                "queue_depth": qd,
                "intra_op_parallelism": 1,
                "single_submit": False,
                "overlap_events": True,
            }
        },
    }
