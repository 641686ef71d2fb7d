"""The tools bench/aio.py compares tiermem against, one class each.

Every tool moves the whole benchmark file sequentially, ``block_size`` bytes
per I/O with ``queue_depth`` of them in flight where the tool has the notion,
and returns the seconds it took. A tool whose package, binary or kernel
interface is missing reports why through :attr:`Tool.skip_reason` instead of
raising, so the benchmark still runs with the peers it has
(``bench/setup_peers.sh`` installs them all).
"""

from __future__ import annotations

import ctypes
import json
import mmap
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, kw_only=True)
class IoShape:
    """What every tool moves in one timed step."""

    path: Path
    size: int
    block_size: int
    queue_depth: int


def drop_file_cache(path: Path) -> None:
    """Evict the file's pages from the page cache (clean pages only: flush first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14


def huge_page_array(size: int) -> tuple[mmap.mmap, np.ndarray]:
    """A private anonymous mapping, 2 MiB-aligned, advised MADV_HUGEPAGE and
    mlock'ed (faulting it in): physically contiguous in 2 MiB pieces where
    transparent huge pages are available. Returns (mapping, uint8 view)."""
    mapping = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    whole = np.frombuffer(mapping, dtype=np.uint8)
    start = (-whole.ctypes.data) % HUGE_PAGE
    array = whole[start : start + size]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise(array.ctypes.data, size, MADV_HUGEPAGE)  # EINVAL where THP is off: fine
    if libc.mlock(array.ctypes.data, size) != 0:
        array[:] = 0  # fault it in all the same
    return mapping, array


class DeviceCounters:
    """Requests and sectors the file's block device completed (its sysfs
    ``stat``), to tell how a tool's I/O reached the disk: the average request
    size shows splitting and merging. Other processes' I/O counts too."""

    def __init__(self, path: Path) -> None:
        st = os.stat(path)
        self.stat_path = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/stat")
        if not self.stat_path.exists():
            self.stat_path = None

    def sample(self) -> tuple[int, int, int, int]:
        """(read requests, read sectors, write requests, write sectors)."""
        if self.stat_path is None:
            return (0, 0, 0, 0)
        f = [int(x) for x in self.stat_path.read_text().split()]
        return (f[0], f[2], f[4], f[6])

    @staticmethod
    def mean_request_kib(before, after, write: bool) -> float | None:
        i = 2 if write else 0
        reqs, sectors = after[i] - before[i], after[i + 1] - before[i + 1]
        return round(sectors * 512 / reqs / 1024, 1) if reqs > 0 else None


class Tool:
    """One tool under test. ``skip_reason`` is None when it can run here."""

    name = "tool"
    qd_sensitive = True  # False: runs once per round, not once per queue depth
    skip_reason: str | None = None

    def write(self, shape: IoShape) -> float:
        raise NotImplementedError

    def read(self, shape: IoShape) -> float:
        raise NotImplementedError

    def data_buffer(self) -> np.ndarray | None:
        """The memory this tool reads into, for checking; None if not ours."""
        return None

    def close(self) -> None:
        """Release buffers and handles."""


class FioTool(Tool):
    """fio with ``direct=1`` and the given ioengine; GB/s as fio reports it.

    [Note: fio's own bandwidth figure is used (bytes over its job runtime), so
     the process start-up is not charged to it; its buffers are its default
     malloc'ed ``iodepth * bs``. Its other settings stay at their defaults
     (one I/O per submit call, reaping from one completion), as a user would
     run it.]
    """

    def __init__(self, ioengine: str) -> None:
        self.ioengine = ioengine
        self.name = f"fio-{ioengine}"
        self.binary = shutil.which("fio")
        if self.binary is None:
            self.skip_reason = "fio not on PATH (bench/setup_peers.sh installs it)"
            return
        engines = subprocess.run(
            [self.binary, "--enghelp"], capture_output=True, text=True, check=False
        ).stdout
        if ioengine not in engines.split():
            self.skip_reason = f"this fio has no {ioengine} ioengine"

    def _run(self, shape: IoShape, rw: str) -> float:
        cmd = [
            self.binary,
            f"--name={self.name}-{rw}",
            f"--filename={shape.path}",
            f"--size={shape.size}",
            f"--bs={shape.block_size}",
            f"--rw={rw}",
            "--direct=1",
            f"--ioengine={self.ioengine}",
            f"--iodepth={shape.queue_depth}",
            "--output-format=json",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")
        job = json.loads(proc.stdout[proc.stdout.index("{") :])["jobs"][0]
        side = job["read" if rw == "read" else "write"]
        if side["io_bytes"] != shape.size or side["runtime"] <= 0:
            raise RuntimeError(f"{self.name}: moved {side['io_bytes']} of {shape.size} bytes")
        return side["io_bytes"] / side["bw_bytes"]

    def write(self, shape: IoShape) -> float:
        return self._run(shape, "write")

    def read(self, shape: IoShape) -> float:
        return self._run(shape, "read")


class DeepSpeedTool(Tool):
    """DeepSpeed's async I/O op (libaio) into a buffer from its locked allocator.

    [Note: ``aio_handle(block_size, queue_depth, single_submit=False,
     overlap_events=True, intra_op_parallelism=1)``: one thread keeps up to
     queue_depth iocbs in flight, refilling as each completion is reaped;
     the settings DeepSpeed's own docs recommend for NVMe offload. One handle
     per queue depth, built once; each call opens the file with O_DIRECT like
     DeepSpeed's swapper does.]
    """

    name = "deepspeed"

    def __init__(self, size: int) -> None:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        self._handles: dict[tuple[int, int], object] = {}
        self.buffer = None
        try:
            from deepspeed.ops.op_builder import AsyncIOBuilder

            builder = AsyncIOBuilder()
            if not builder.is_compatible(verbose=False):
                self.skip_reason = "DeepSpeed AsyncIOBuilder incompatible (libaio-dev missing?)"
                return
            self._module = builder.load(verbose=False)
        except Exception as exc:  # ImportError, build failure: report, do not crash
            self.skip_reason = f"deepspeed aio unavailable: {type(exc).__name__}: {exc}"[:300]
            return
        import torch

        handle = self._handle(1 << 20, 1)
        self.buffer = handle.new_cpu_locked_tensor(size, torch.empty(0, dtype=torch.uint8))
        self.buffer.numpy()[:] = 0x5A

    def _handle(self, block_size: int, queue_depth: int):
        key = (block_size, queue_depth)
        if key not in self._handles:
            self._handles[key] = self._module.aio_handle(block_size, queue_depth, False, True, 1)
        return self._handles[key]

    def _run(self, shape: IoShape, write: bool) -> float:
        handle = self._handle(shape.block_size, shape.queue_depth)
        view = self.buffer[: shape.size]
        t0 = time.perf_counter()
        rc = (
            handle.sync_pwrite(view, str(shape.path))
            if write
            else handle.sync_pread(view, str(shape.path))
        )
        dt = time.perf_counter() - t0
        if rc < 0:
            raise RuntimeError(f"deepspeed {'write' if write else 'read'} returned {rc}")
        return dt

    def write(self, shape: IoShape) -> float:
        return self._run(shape, True)

    def read(self, shape: IoShape) -> float:
        return self._run(shape, False)

    def data_buffer(self) -> np.ndarray | None:
        return None if self.buffer is None else self.buffer.numpy()

    def close(self) -> None:
        if self.buffer is not None:
            handle = self._handle(1 << 20, 1)
            handle.free_cpu_locked_tensor(self.buffer)
            self.buffer = None
        self._handles.clear()


class PythonTool(Tool):
    """Plain Python file objects: buffered reads after evicting the file from
    the page cache, buffered writes followed by fsync."""

    name = "python"
    qd_sensitive = False

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer = buffer
        self.view = memoryview(buffer).cast("B")

    def data_buffer(self) -> np.ndarray:
        return self.buffer

    def write(self, shape: IoShape) -> float:
        t0 = time.perf_counter()
        with open(shape.path, "r+b") as f:
            for off in range(0, shape.size, shape.block_size):
                f.write(self.view[off : off + shape.block_size])
            f.flush()
            os.fsync(f.fileno())
        return time.perf_counter() - t0

    def read(self, shape: IoShape) -> float:
        drop_file_cache(shape.path)
        t0 = time.perf_counter()
        done = 0
        with open(shape.path, "rb") as f:
            for off in range(0, shape.size, shape.block_size):
                n = f.readinto(self.view[off : off + shape.block_size])
                if not n:
                    break
                done += n
        dt = time.perf_counter() - t0
        if done != shape.size:
            raise RuntimeError(f"python read {done} of {shape.size} bytes")
        return dt


class PyuringTool(Tool):
    """pyuring's ring driven from Python: queue_depth O_DIRECT reads or writes
    in flight, one submission per I/O, refilled as each completion arrives."""

    name = "pyuring"

    def __init__(self, buffer: np.ndarray) -> None:
        self.buffer = buffer
        try:
            import pyuring  # noqa: F401
            from pyuring import UringCtx
        except Exception as exc:
            self.skip_reason = f"pyuring not importable: {type(exc).__name__}: {exc}"[:300]
            return
        self._ctx_type = UringCtx
        self._rings: dict[int, object] = {}

    def data_buffer(self) -> np.ndarray:
        return self.buffer

    def _ring(self, queue_depth: int):
        if queue_depth not in self._rings:
            self._rings[queue_depth] = self._ctx_type(entries=max(queue_depth, 2))
        return self._rings[queue_depth]

    def _run(self, shape: IoShape, write: bool) -> float:
        ring = self._ring(shape.queue_depth)
        base = self.buffer.ctypes.data
        flags = (os.O_WRONLY if write else os.O_RDONLY) | os.O_DIRECT
        issue = ring.write_async_ptr if write else ring.read_async_ptr
        offsets = range(0, shape.size, shape.block_size)
        t0 = time.perf_counter()
        fd = os.open(shape.path, flags)
        try:
            nxt, inflight, done = 0, 0, 0
            while done < len(offsets):
                while inflight < shape.queue_depth and nxt < len(offsets):
                    off = offsets[nxt]
                    n = min(shape.block_size, shape.size - off)
                    issue(fd, ctypes.c_void_p(base + off), n, off, user_data=nxt)
                    nxt += 1
                    inflight += 1
                tag, res = ring.wait_completion()
                want = min(shape.block_size, shape.size - offsets[tag])
                if res != want:
                    raise RuntimeError(f"pyuring: I/O {tag} returned {res}, expected {want}")
                inflight -= 1
                done += 1
        finally:
            os.close(fd)
        return time.perf_counter() - t0

    def write(self, shape: IoShape) -> float:
        return self._run(shape, True)

    def read(self, shape: IoShape) -> float:
        return self._run(shape, False)

    def close(self) -> None:
        for ring in getattr(self, "_rings", {}).values():
            ring.close()
        self._rings = {}
