"""Asynchronous file I/O over the native engine (io_uring, Linux AIO, or threads).

Example::

    from tiermem.aio import AioConfig, AioFile
    from tiermem.buffers import HostBufferPool

    pool = HostBufferPool(1 << 30)
    buf = pool.allocate(64 << 20)
    with AioFile("/nvme/swap.bin", "w+", config=AioConfig(queue_depth=32)) as f:
        req = f.submit_write(buf.tensor(), offset=0)   # returns at once
        ...                                            # compute meanwhile
        req.wait()                                     # bytes written, or OSError

Requests of any length at any offset are split into ``block_size`` pieces
with up to ``queue_depth`` in flight. O_DIRECT is used where the filesystem
allows it and the buffer and offset are 4 KiB-aligned (buffers from
:class:`~tiermem.buffers.HostBufferPool` are); the rest of a transfer goes
through the page cache, byte-exact.
"""

from __future__ import annotations

import errno as errno_mod
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tiermem._native import native

BACKENDS = ("auto", "io_uring", "libaio", "threads")
DIRECT_MODES = ("auto", "on", "off")
_BACKEND_IDS = {name: i for i, name in enumerate(BACKENDS)}
_DIRECT_IDS = {"auto": 0, "on": 1, "off": 2}
# [Note: waits on a request are sliced so that the interpreter runs signal
#  handlers between slices (Ctrl-C raises KeyboardInterrupt within a slice);
#  the native wait releases the GIL during each slice.]
WAIT_SLICE_NS = 100_000_000
_OPEN_READ, _OPEN_WRITE, _OPEN_CREATE, _OPEN_EXCL, _OPEN_TRUNC, _OPEN_NOFOLLOW = 1, 2, 4, 8, 16, 32
_MODES = {
    "r": _OPEN_READ,
    "r+": _OPEN_READ | _OPEN_WRITE,
    "w+": _OPEN_READ | _OPEN_WRITE | _OPEN_CREATE | _OPEN_TRUNC,
    "x+": _OPEN_READ | _OPEN_WRITE | _OPEN_CREATE | _OPEN_EXCL,
    "a+": _OPEN_READ | _OPEN_WRITE | _OPEN_CREATE,
}


@dataclass(frozen=True, kw_only=True)
class AioConfig:
    """How a file's I/O engine runs.

    Attributes:
        backend: ``auto`` (io_uring, else Linux AIO with O_DIRECT, else
            threads), or one of ``io_uring``, ``libaio``, ``threads``. With
            ``auto`` the environment variable ``TIERMEM_AIO_BACKEND`` decides.
        block_size: bytes per piece, a multiple of 4096.
        queue_depth: pieces in flight.
        direct: ``auto`` (O_DIRECT where the filesystem accepts it; the
            environment variable ``TIERMEM_AIO_DIRECT=0|1`` decides), ``on``
            (fail if refused) or ``off``.
        threads: worker threads of the ``threads`` backend (0: queue_depth, at most 16).
    """

    backend: str = "auto"
    block_size: int = 1 << 20
    queue_depth: int = 32
    direct: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"AioConfig.backend: expected one of {BACKENDS}, got {self.backend!r}")
        if self.direct not in DIRECT_MODES:
            raise ValueError(
                f"AioConfig.direct: expected one of {DIRECT_MODES}, got {self.direct!r}"
            )
        bs = self.block_size
        if not isinstance(bs, int) or bs <= 0 or bs % 4096 or bs > (1 << 30):
            raise ValueError(
                "AioConfig.block_size: expected a positive multiple of 4096 up to 1 GiB, "
                f"got {bs!r}"
            )
        qd = self.queue_depth
        if not isinstance(qd, int) or not 1 <= qd <= 4096:
            raise ValueError(f"AioConfig.queue_depth: expected an integer in 1..4096, got {qd!r}")
        if not isinstance(self.threads, int) or not 0 <= self.threads <= 256:
            raise ValueError(
                f"AioConfig.threads: expected an integer in 0..256, got {self.threads!r}"
            )


def buffer_address(buf, *, writable: bool) -> tuple[int, int]:
    """(address, nbytes) of a contiguous CPU tensor or numpy array."""
    if isinstance(buf, torch.Tensor):
        if buf.device.type != "cpu":
            raise ValueError(f"expected a CPU tensor, got one on {buf.device}")
        if not buf.is_contiguous():
            raise ValueError("expected a contiguous tensor")
        return buf.data_ptr(), buf.numel() * buf.element_size()
    if isinstance(buf, np.ndarray):
        if not buf.flags.c_contiguous:
            raise ValueError("expected a C-contiguous numpy array")
        if writable and not buf.flags.writeable:
            raise ValueError("expected a writable numpy array to read into")
        return buf.ctypes.data, buf.nbytes
    raise TypeError(f"expected a torch.Tensor or numpy.ndarray, got {type(buf).__name__}")


class AioRequest:
    """One submitted read or write. Wait on it or poll it; it keeps its buffer alive."""

    def __init__(self, file: AioFile, handle, buf, op: str, offset: int, nbytes: int) -> None:
        self._file = file
        self._handle = handle
        self._buf = buf  # keeps the memory alive until completion
        self.op = op
        self.offset = offset
        self.nbytes = nbytes
        self._result: int | None = None
        self._error: OSError | None = None
        self._lock = threading.Lock()

    def _finish(self) -> None:
        # Called with self._lock held; returns once the C request has completed.
        ffi, lib = native.ffi, native.lib
        err_off = ffi.new("int64_t *")
        result = ffi.new("int64_t *")
        while True:
            rc = lib.tm_request_wait_for(self._handle, WAIT_SLICE_NS, result, err_off)
            if rc == 1:
                break
            if rc < 0:
                raise self._file._foreign_error(-rc)
        res = result[0]
        lib.tm_request_free(self._handle)
        self._handle = None
        self._buf = None
        self._file._forget(self)
        if res < 0:
            errno = -res
            self._error = OSError(
                errno,
                f"{os.strerror(errno)}: {self.op} of {self.nbytes} bytes at offset {self.offset} "
                f"of {self._file.path} failed at file offset {err_off[0]} "
                f"(backend {self._file.backend}, O_DIRECT {'on' if self._file.direct else 'off'})",
                str(self._file.path),
            )
        elif res != self.nbytes:
            self._error = OSError(
                5,
                f"short {self.op}: {res} of {self.nbytes} bytes at offset {self.offset} of "
                f"{self._file.path} (backend {self._file.backend})",
                str(self._file.path),
            )
        else:
            self._result = int(res)

    @property
    def path(self) -> Path:
        """The file this request reads or writes."""
        return self._file.path

    def wait(self) -> int:
        """Block until done; return the bytes transferred or raise :class:`OSError`."""
        with self._lock:
            if self._handle is not None:
                self._finish()  # tm_request_wait blocks without the GIL
            if self._error is not None:
                raise self._error
            assert self._result is not None
            return self._result

    def done(self) -> bool:
        """True once the transfer has completed (successfully or not)."""
        with self._lock:
            if self._handle is None:
                return True
            rc = native.lib.tm_request_poll(self._handle)
            if rc < 0:
                raise self._file._foreign_error(-rc)
            return bool(rc)


class AioFile:
    """A file with its own asynchronous I/O engine.

    Args:
        path: the file.
        mode: ``r`` read-only, ``r+`` read-write, ``w+`` create or truncate,
            ``x+`` create and fail if it exists, ``a+`` create if missing.
        config: engine settings (:class:`AioConfig`).
        follow_symlinks: if False, a symlink as the final path component is refused.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        mode: str = "r+",
        *,
        config: AioConfig | None = None,
        follow_symlinks: bool = True,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"AioFile mode: expected one of {tuple(_MODES)}, got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.config = config or AioConfig()
        ffi, lib = native.ffi, native.lib
        cfg = ffi.new("tm_file_config *")
        cfg.backend = _BACKEND_IDS[self.config.backend]
        cfg.direct = _DIRECT_IDS[self.config.direct]
        cfg.block_size = self.config.block_size
        cfg.queue_depth = self.config.queue_depth
        cfg.threads = self.config.threads
        flags = _MODES[mode] | (0 if follow_symlinks else _OPEN_NOFOLLOW)
        out = ffi.new("tm_file **")
        rc = lib.tm_file_open(os.fsencode(self.path), flags, cfg, out)
        if rc < 0:
            errno = -rc
            raise OSError(
                errno,
                f"{os.strerror(errno)}: cannot open {self.path} (mode {mode!r}, backend "
                f"{self.config.backend}, direct {self.config.direct})",
                str(self.path),
            )
        self._f = out[0]
        info = ffi.new("tm_file_info *")
        lib.tm_file_info_get(self._f, info)
        self.backend: str = ffi.string(lib.tm_backend_name(info.backend)).decode()
        self.direct: bool = bool(info.direct)
        self.reason: str = ffi.string(info.reason).decode()
        self._lock = threading.Lock()
        # [Note: close and submit exclude each other: a submit that passed the
        #  closed-check must not reach the C library after tm_file_close.]
        self._io_lock = threading.Lock()
        self._outstanding: set[AioRequest] = set()
        self._pid = os.getpid()

    # ---- lifecycle ----
    def _handle(self):
        if self._f is None:
            raise ValueError(f"I/O on closed AioFile {self.path}")
        return self._f

    def _foreign_error(self, errno: int) -> OSError:
        if errno == errno_mod.ECHILD:
            return OSError(
                errno,
                f"{self.path} was opened by process {self._pid} and is used in process "
                f"{os.getpid()} (inherited across fork): its I/O engine runs only in the "
                "process that opened it; open the file again in this process",
                str(self.path),
            )
        return OSError(errno, f"{os.strerror(errno)}: waiting on I/O of {self.path}")

    def close(self) -> None:
        """Wait for outstanding requests (errors are left on them) and close.

        In a forked child only the child's copies of the descriptors are closed:
        the parent's requests and engine are not the child's to wait for.
        """
        if getattr(self, "_f", None) is None:
            return
        if os.getpid() != self._pid:
            # Not under _io_lock: another thread of the parent may have held it at fork.
            native.lib.tm_file_close(self._f)  # -ECHILD: closes the child's fds only
            self._f = None
            return
        with self._io_lock:
            if self._f is None:
                return
            with self._lock:
                pending = list(self._outstanding)
            for r in pending:
                try:
                    r.wait()
                except OSError:
                    pass
            native.lib.tm_file_close(self._f)
            self._f = None

    def __enter__(self) -> AioFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _forget(self, req: AioRequest) -> None:
        with self._lock:
            self._outstanding.discard(req)

    # ---- I/O ----
    def _submit(self, op: str, buf, offset: int) -> AioRequest:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        addr, nbytes = buffer_address(buf, writable=(op == "read"))
        ffi, lib = native.ffi, native.lib
        out = ffi.new("tm_request **")
        with self._io_lock:
            rc = lib.tm_file_submit(
                self._handle(),
                0 if op == "read" else 1,
                ffi.cast("void *", addr),
                nbytes,
                offset,
                out,
            )
            if rc == -errno_mod.ECHILD:
                raise self._foreign_error(-rc)
            if rc < 0:
                raise OSError(
                    -rc,
                    f"{os.strerror(-rc)}: submitting {op} of {nbytes} bytes at offset "
                    f"{offset} of {self.path}",
                    str(self.path),
                )
            req = AioRequest(self, out[0], buf, op, offset, nbytes)
            with self._lock:
                self._outstanding.add(req)
        return req

    def submit_read(self, buf, offset: int = 0) -> AioRequest:
        """Start reading ``buf.nbytes`` bytes at ``offset`` into ``buf``."""
        return self._submit("read", buf, offset)

    def submit_write(self, buf, offset: int = 0) -> AioRequest:
        """Start writing ``buf`` to the file at ``offset``."""
        return self._submit("write", buf, offset)

    def read_into(self, buf, offset: int = 0) -> int:
        """Read synchronously; returns bytes read (all of ``buf``) or raises OSError."""
        return self.submit_read(buf, offset).wait()

    def write(self, buf, offset: int = 0) -> int:
        """Write synchronously; returns bytes written or raises OSError."""
        return self.submit_write(buf, offset).wait()

    def allocate(self, size: int) -> None:
        """Preallocate the first ``size`` bytes (fallocate); ENOSPC is raised here."""
        rc = native.lib.tm_file_allocate(self._handle(), size)
        if rc < 0:
            raise OSError(
                -rc, f"{os.strerror(-rc)}: allocating {size} bytes for {self.path}", str(self.path)
            )

    def sync(self) -> None:
        """fdatasync the file."""
        rc = native.lib.tm_file_sync(self._handle())
        if rc < 0:
            raise OSError(-rc, f"{os.strerror(-rc)}: fdatasync of {self.path}", str(self.path))

    def size(self) -> int:
        rc = native.lib.tm_file_size(self._handle())
        if rc < 0:
            raise OSError(-rc, f"{os.strerror(-rc)}: fstat of {self.path}", str(self.path))
        return int(rc)

    @property
    def inflight(self) -> int:
        """Pieces in flight right now."""
        return int(native.lib.tm_file_inflight(self._handle()))

    @property
    def pieces_submitted(self) -> int:
        return int(native.lib.tm_file_pieces_submitted(self._handle()))

    def record_latencies(self, log: np.ndarray | None) -> None:
        """Record each piece's latency (ns) into ``log`` (int64); None stops."""
        ffi = native.ffi
        if log is None:
            native.lib.tm_file_latency_log(self._handle(), ffi.NULL, 0)
            self._lat_log = None
            return
        if log.dtype != np.int64 or not log.flags.c_contiguous:
            raise ValueError("latency log must be a contiguous int64 array")
        self._lat_log = log  # keep alive while the engine writes into it
        native.lib.tm_file_latency_log(
            self._handle(), ffi.cast("int64_t *", log.ctypes.data), log.size
        )

    def latencies_recorded(self) -> int:
        return int(native.lib.tm_file_latency_count(self._handle()))

    def inject_faults(
        self,
        *,
        fail_nth: int = 0,
        errno: int = 5,
        short_every: int = 0,
        refuse_submits: int = 0,
        refuse_errno: int = errno_mod.EAGAIN,
    ) -> None:
        """Test hook: fail the ``fail_nth`` next piece with ``errno``; report
        every ``short_every``-th piece as a short transfer; refuse the next
        ``refuse_submits`` kernel submissions with ``refuse_errno`` (EAGAIN:
        the engine backs off and retries)."""
        lib = native.lib
        lib.tm_file_inject(self._handle(), fail_nth, errno, short_every)
        lib.tm_file_inject_submit(self._handle(), 0, refuse_submits, refuse_errno)

    def __repr__(self) -> str:
        state = "closed" if self._f is None else f"{self.backend}, direct={self.direct}"
        return f"AioFile({str(self.path)!r}, {self.mode!r}, {state})"


def probe() -> dict[str, str]:
    """Which kernel interfaces this process may use: {"io_uring": "ok" | reason, ...}."""
    lib = native.lib
    out = {}
    for name, fn in (("io_uring", lib.tm_probe_io_uring), ("libaio", lib.tm_probe_libaio)):
        rc = fn()
        out[name] = "ok" if rc == 0 else f"refused: {os.strerror(-rc)} (errno {-rc})"
    return out
