"""Aligned host buffers with a byte budget, exposed as torch tensors and numpy arrays.

A :class:`HostBufferPool` hands out 4 KiB-aligned :class:`HostBuffer` objects
(anonymous mmap in the C library), optionally mlock'ed, and on CUDA machines
registered as pinned memory so host <-> GPU copies need no bounce buffer.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from tiermem._native import native

ALIGNMENT = 4096
# [Note: cudaHostRegister is called on bounded chunks of a buffer rather than
#  using torch's pinned allocator, which rounds every allocation up to a power
#  of two (a 5 GiB pool would cost 8 GiB of pinned memory).]
PIN_CHUNK_BYTES = 256 << 20


def round_up(n: int, multiple: int = ALIGNMENT) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return (n + multiple - 1) // multiple * multiple


class _CudaPinning:
    """Registers host ranges as pinned memory with the CUDA runtime, in chunks."""

    def __init__(self, chunk_bytes: int = PIN_CHUNK_BYTES) -> None:
        self.chunk_bytes = chunk_bytes
        self._cudart = torch.cuda.cudart()

    def register(self, ptr: int, nbytes: int) -> None:
        done = 0
        while done < nbytes:
            n = min(self.chunk_bytes, nbytes - done)
            err = self._cudart.cudaHostRegister(ptr + done, n, 0)
            if int(err) != 0:
                self.unregister(ptr, done)
                raise MemoryError(
                    f"cudaHostRegister of {n} bytes failed with CUDA error {int(err)}"
                )
            done += n

    def unregister(self, ptr: int, nbytes: int) -> None:
        done = 0
        while done < nbytes:
            self._cudart.cudaHostUnregister(ptr + done)
            done += min(self.chunk_bytes, nbytes - done)


class HostBuffer:
    """One aligned host allocation. Views share its memory; none copies.

    The memory is unmapped once the buffer and every view made from it are
    gone, so a view never dangles; :meth:`release` returns the bytes to the
    pool's budget (and the memory to the pool for reuse).
    """

    def __init__(self, pool: HostBufferPool, mem, nbytes: int, capacity: int) -> None:
        self._pool = pool
        self._mem = mem
        self.nbytes = nbytes
        self.capacity = capacity
        self.ptr = int(native.ffi.cast("uintptr_t", mem))
        self._released = False

    def _check(self) -> None:
        if self._released:
            raise ValueError("HostBuffer used after release()")

    def memoryview(self) -> memoryview:
        self._check()
        return memoryview(native.ffi.buffer(self._mem, self.nbytes))

    def tensor(self, dtype: torch.dtype = torch.uint8, shape: tuple[int, ...] | None = None):
        """A CPU tensor over the first bytes of this buffer (no copy)."""
        self._check()
        itemsize = torch.empty((), dtype=dtype).element_size()
        count = self.nbytes // itemsize if shape is None else int(np.prod(shape, dtype=np.int64))
        if count * itemsize > self.nbytes:
            raise ValueError(
                f"shape {shape} of {dtype} needs {count * itemsize} bytes, buffer has {self.nbytes}"
            )
        if count == 0:
            t = torch.empty(0, dtype=dtype)
        else:
            t = torch.frombuffer(native.ffi.buffer(self._mem, count * itemsize), dtype=dtype)
        return t.view(shape) if shape is not None else t

    def numpy(self, dtype=np.uint8, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """A numpy array over the first bytes of this buffer (no copy)."""
        self._check()
        dtype = np.dtype(dtype)
        count = (
            self.nbytes // dtype.itemsize if shape is None else int(np.prod(shape, dtype=np.int64))
        )
        if count < 0 or count * dtype.itemsize > self.nbytes:
            raise ValueError(
                f"shape {shape} of {dtype} needs {count * dtype.itemsize} bytes, "
                f"buffer has {self.nbytes}"
            )
        arr = np.frombuffer(native.ffi.buffer(self._mem, count * dtype.itemsize), dtype=dtype)
        return arr.reshape(shape) if shape is not None else arr

    def release(self) -> None:
        """Give the bytes back to the pool. Idempotent."""
        if not self._released:
            self._released = True
            self._pool._give_back(self)

    def __enter__(self) -> HostBuffer:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


@dataclass(frozen=True, kw_only=True)
class HostBufferPoolStats:
    budget_bytes: int
    bytes_in_use: int
    bytes_cached: int
    peak_bytes: int
    locked: bool
    pinned: bool


class HostBufferPool:
    """Aligned host buffers within a byte budget.

    Args:
        budget_bytes: the most bytes mapped at once (rounded to 4 KiB each): those
            handed out plus released ones kept for reuse.
        lock: mlock the pages (fails softly: see :attr:`lock_error`).
        pin: register with CUDA as pinned memory: ``"auto"`` when CUDA is
            available, ``True`` to require it, ``False`` never.
    """

    def __init__(self, budget_bytes: int, *, lock: bool = False, pin: bool | str = "auto") -> None:
        if budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive, got {budget_bytes}")
        if pin not in (True, False, "auto"):
            raise ValueError(f"pin must be True, False or 'auto', got {pin!r}")
        self.budget_bytes = int(budget_bytes)
        self.lock = lock
        want_pin = torch.cuda.is_available() if pin == "auto" else bool(pin)
        if want_pin and not torch.cuda.is_available():
            raise ValueError("pin=True needs CUDA, which is not available")
        self._pinning = _CudaPinning() if want_pin else None
        self.lock_error: int = 0
        self._mutex = threading.Lock()
        self._in_use = 0
        self._peak = 0
        self._cached: dict[int, list] = defaultdict(list)  # capacity -> [mem]
        self._cached_bytes = 0

    def _map(self, capacity: int):
        ffi, lib = native.ffi, native.lib
        lock_err = ffi.new("int *")
        raw = lib.tm_buffer_alloc(capacity, ALIGNMENT, 1 if self.lock else 0, lock_err)
        if raw == ffi.NULL:
            raise MemoryError(f"host buffer pool: mmap of {capacity} bytes failed")
        if lock_err[0]:
            self.lock_error = -lock_err[0]
        ptr = int(ffi.cast("uintptr_t", raw))
        pinning = self._pinning
        if pinning is not None:
            try:
                pinning.register(ptr, capacity)
            except MemoryError:
                lib.tm_buffer_free(raw, capacity)
                raise

        def unmap(c, n=capacity, p=ptr, pin=pinning, free=lib.tm_buffer_free):
            if pin is not None:
                pin.unregister(p, n)
            free(c, n)

        return ffi.gc(raw, unmap, size=capacity)

    def allocate(self, nbytes: int) -> HostBuffer:
        """A buffer of at least ``nbytes`` (capacity rounded up to 4 KiB)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        capacity = round_up(max(nbytes, 1))
        with self._mutex:
            if self._in_use + capacity > self.budget_bytes:
                raise MemoryError(
                    f"host buffer pool: {capacity} bytes requested, {self._in_use} of the "
                    f"{self.budget_bytes}-byte budget in use"
                )
            self._in_use += capacity
            self._peak = max(self._peak, self._in_use)
            cached = self._cached.get(capacity)
            mem = cached.pop() if cached else None
            if mem is not None:
                self._cached_bytes -= capacity
        if mem is None:
            self._drop_cached()
            try:
                mem = self._map(capacity)
            except BaseException:
                with self._mutex:
                    self._in_use -= capacity
                raise
        return HostBuffer(self, mem, nbytes, capacity)

    def _drop_cached(self) -> None:
        """Unmap cached buffers until those in use (counting the one being mapped) and the
        cached ones fit in the budget together.

        [Note: released memory stays resident while it is cached, so the cache
        shares the budget with the buffers in use: a pool whose sizes change
        (the store pages tensors of many sizes) would otherwise keep up to
        twice its budget resident.]
        """
        with self._mutex:
            for size in list(self._cached):
                cached = self._cached[size]
                while cached and self._in_use + self._cached_bytes > self.budget_bytes:
                    cached.pop()
                    self._cached_bytes -= size
                if not cached:
                    del self._cached[size]

    def _give_back(self, buf: HostBuffer) -> None:
        with self._mutex:
            self._in_use -= buf.capacity
            if self._in_use + self._cached_bytes + buf.capacity <= self.budget_bytes:
                self._cached[buf.capacity].append(buf._mem)
                self._cached_bytes += buf.capacity
        buf._mem = None

    def trim(self) -> None:
        """Drop cached (released) memory; it is unmapped once no view uses it."""
        with self._mutex:
            self._cached.clear()
            self._cached_bytes = 0

    @property
    def bytes_in_use(self) -> int:
        return self._in_use

    def stats(self) -> HostBufferPoolStats:
        return HostBufferPoolStats(
            budget_bytes=self.budget_bytes,
            bytes_in_use=self._in_use,
            bytes_cached=self._cached_bytes,
            peak_bytes=self._peak,
            locked=self.lock,
            pinned=self._pinning is not None,
        )
