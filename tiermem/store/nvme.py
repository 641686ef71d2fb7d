"""The NVMe tier: striped swap files, an extent allocator and the table on disk.

Layout: one swap file per swap directory (a *stripe*). The store's NVMe space
is one logical address range cut into ``stripe_unit`` pieces dealt round-robin
to the stripes, so one tensor's extent spans every file and a read drives all
disks at once (DeepSpeed swaps a tensor to a single file). Each file starts
with a 4 KiB header (magic, stripe index, store id); data follows, aligned so
every transfer can use O_DIRECT. Extents are 4 KiB-aligned ranges of the
logical space, handed out first-fit from a free list.

Files are preallocated with fallocate: all at once when a byte budget is
given, else grown on demand after checking the filesystem's free space, so a
full disk is reported before any data is written.
"""

from __future__ import annotations

import bisect
import errno as errno_mod
import fcntl
import json
import os
import re
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch

from tiermem.aio import AioConfig, AioFile, AioRequest
from tiermem.buffers import round_up
from tiermem.checksum import crc32c
from tiermem.durable import fsync_dir, write_all
from tiermem.faults import FaultPlan, FaultyAioFile
from tiermem.store.errors import StoreBudgetError, StoreError
from tiermem.store.states import TierKind
from tiermem.store.swap_safety import (
    check_extent,
    check_owner,
    check_private_dir,
    is_int,
    same_file,
)

SWAP_MAGIC = b"TIERMEM-SWAP\x001\n"
HEADER_BYTES = 4096
TABLE_NAME = "tiermem-table.json"
TABLE_FORMAT = "tiermem.store/2"  # /2: the table carries a crc32c of itself
LEGACY_TABLE_FORMAT = "tiermem.store/1"
PERSISTENT_SWAP_NAME = "tiermem.swap"
LOCK_NAME = "tiermem.lock"
SCRATCH_NAME = re.compile(r"^tiermem-(\d+)-(\d+)\.swap$")
# [Note: without a byte budget the files grow by at least this much at a time
#  (less when the filesystem has less free), so growth is rare but a small
#  disk is still usable to the last unit.]
GROW_CHUNK = 64 << 20


@dataclass(frozen=True)
class Extent:
    """A 4 KiB-aligned range of the striped logical space."""

    offset: int
    length: int


class ExtentAllocator:
    """First-fit allocation of byte ranges with coalescing free list."""

    def __init__(self, capacity: int = 0) -> None:
        self.capacity = 0
        self.used = 0
        self._starts: list[int] = []  # sorted free run starts
        self._lengths: dict[int, int] = {}
        if capacity:
            self.extend(capacity)

    def _insert(self, start: int, length: int) -> None:
        i = bisect.bisect_left(self._starts, start)
        # merge with the previous and next runs
        if i > 0:
            prev = self._starts[i - 1]
            if prev + self._lengths[prev] == start:
                start, length = prev, self._lengths.pop(prev) + length
                self._starts.pop(i - 1)
                i -= 1
        if i < len(self._starts) and start + length == self._starts[i]:
            nxt = self._starts.pop(i)
            length += self._lengths.pop(nxt)
        self._starts.insert(i, start)
        self._lengths[start] = length

    def extend(self, new_capacity: int) -> None:
        """Add ``[capacity, new_capacity)`` to the free space."""
        if new_capacity > self.capacity:
            self._insert(self.capacity, new_capacity - self.capacity)
            self.capacity = new_capacity

    def take(self, length: int) -> int | None:
        """Offset of a free run of ``length`` bytes (now used), or None."""
        for start in self._starts:
            run = self._lengths[start]
            if run >= length:
                i = bisect.bisect_left(self._starts, start)
                self._starts.pop(i)
                del self._lengths[start]
                if run > length:
                    self._starts.insert(i, start + length)
                    self._lengths[start + length] = run - length
                self.used += length
                return start
        return None

    def reserve(self, start: int, length: int) -> None:
        """Mark ``[start, start+length)`` used (it must be free): for reopening."""
        i = bisect.bisect_right(self._starts, start) - 1
        if i < 0:
            raise ValueError(f"extent at {start} (+{length}) is not free")
        run_start = self._starts[i]
        run_len = self._lengths[run_start]
        if start + length > run_start + run_len:
            raise ValueError(f"extent at {start} (+{length}) overlaps another or the end")
        self._starts.pop(i)
        del self._lengths[run_start]
        if start > run_start:
            self._insert(run_start, start - run_start)
        if start + length < run_start + run_len:
            self._insert(start + length, run_start + run_len - start - length)
        self.used += length

    def release(self, start: int, length: int) -> None:
        self.used -= length
        self._insert(start, length)

    def largest_free(self) -> int:
        return max(self._lengths.values(), default=0)


# ---------------------------------------------------------------------------
# paths, permissions, stale files


def _unsafe_dir(target: Path) -> Path | None:
    """The first directory at or above ``target`` through which another user
    could replace it, or None.

    [Note: a directory others can write is unsafe unless it is sticky (like
    /tmp) and the entry below it belongs to us or root; the target itself must
    not be writable by others at all.]
    """
    uid = os.getuid()
    child: Path | None = None
    for d in (target, *target.parents):
        try:
            ds = os.stat(d)
        except OSError:
            child = d
            continue
        if stat.S_ISDIR(ds.st_mode) and ds.st_mode & stat.S_IWOTH:
            if child is None or not ds.st_mode & stat.S_ISVTX:
                return d
            try:
                owner = os.stat(child).st_uid
            except OSError:
                return d
            if owner not in (uid, 0):
                return d
        child = d
    return None


def check_swap_path(path: str | os.PathLike) -> Path:
    """The absolute swap directory, or StoreError if it is, or passes through,
    a symlink into a directory that other users can write."""
    p = Path(os.path.abspath(os.fspath(path)))
    cur = Path(p.parts[0])
    for part in p.parts[1:]:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            break
        if not stat.S_ISLNK(st.st_mode):
            continue
        target = Path(os.path.realpath(cur))
        bad = _unsafe_dir(target)
        if bad is not None:
            raise StoreError(
                f"swap path {p}: {cur} is a symlink to {target}, inside {bad} which other "
                "users can write; refusing it (give a private directory's real path)"
            )
    return p


def make_private_dir(path: Path) -> None:
    """Create ``path`` and missing parents with mode 0700 (existing parents are kept);
    an existing ``path`` must be ours and is made unwritable by others (see
    :func:`check_private_dir`)."""
    missing = []
    cur = path
    while not cur.exists():
        missing.append(cur)
        cur = cur.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            continue
        os.chmod(d, 0o700)  # whatever the umask
    if not path.is_dir():
        raise StoreError(f"swap path {path} exists and is not a directory")
    check_private_dir(path)


def open_nofollow(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never follows a symlink as the last component (StoreError if one is
    there: a swap, table or lock file that is a symlink was not made by tiermem), nor
    keeps open a file another user owns."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno_mod.ELOOP:
            raise StoreError(
                f"{path} is a symlink; tiermem never follows symlinks to its swap, table or "
                "lock files (remove it)"
            ) from None
        raise
    try:
        check_owner(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_directory(directory: Path) -> int:
    """Take the exclusive lock of a persistent store's swap directory.

    Returns the descriptor of ``directory/tiermem.lock``, locked with
    ``flock`` and holding this process's pid; closing it (or the process
    ending, kill -9 included) releases the lock. A directory another process
    holds is a StoreError naming the directory and that process's pid.

    [Note: only persistent stores lock their directory: they share one table
    and one swap file per directory, which two writers would corrupt. Scratch
    stores each make their own pid-named files, so several may share a
    directory safely (see remove_stale_files). The lock file is left in place
    at close: unlinking a lock file races with a process that has opened but
    not yet locked it.]
    """
    path = directory / LOCK_NAME
    fd = open_nofollow(path, os.O_RDWR | os.O_CREAT)
    try:
        if not _try_lock(fd):
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise StoreError(
                f"swap directory {directory} is in use by another process (pid {holder} holds "
                f"{path}); give each process its own nvme path"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_stale_files(directory: Path) -> list[Path]:
    """Remove scratch swap files of dead processes in ``directory``.

    A file is stale when the pid in its name is not alive, no process holds
    its lock (so a reused pid's live store is never touched) and it starts with
    the swap header naming that pid (so only files tiermem made are removed).
    """
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = SCRATCH_NAME.match(name)
        if not m or pid_alive(int(m.group(1))):
            continue
        path = directory / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if _try_lock(fd) and _scratch_header_of(fd, int(m.group(1))):
                path.unlink(missing_ok=True)
                removed.append(path)
        finally:
            os.close(fd)
    return removed


def _scratch_header_of(fd: int, pid: int) -> bool:
    """Whether the open file starts with the header a scratch store of ``pid`` writes.

    [Note: the name alone is not enough to delete a file: a file that merely
    looks like ours (a user's, or one whose header was never written) is kept.]
    """
    head = os.pread(fd, HEADER_BYTES, 0)
    if not head.startswith(SWAP_MAGIC):
        return False
    try:
        meta = json.loads(head[len(SWAP_MAGIC) :].split(b"\n", 1)[0])
    except ValueError:
        return False
    return isinstance(meta, dict) and meta.get("pid") == pid


def write_table_atomic(directory: Path, table: dict) -> Path:
    """Write ``table`` as JSON: temp file, fsync, rename, fsync directory.

    A crash at any point leaves either the previous table or this one.
    """
    final = directory / TABLE_NAME
    tmp = directory / (TABLE_NAME + ".tmp")
    table = dict(table, crc32c=_table_crc(table))
    data = json.dumps(table, sort_keys=True).encode()
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def _table_crc(table: dict) -> str:
    body = {k: v for k, v in table.items() if k != "crc32c"}
    return f"{crc32c(json.dumps(body, sort_keys=True).encode()):08x}"


def read_table(directory: Path) -> dict | None:
    """The committed table in ``directory``, None if there is none."""
    path = directory / TABLE_NAME
    try:
        fd = open_nofollow(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read()
    try:
        table = json.loads(raw)
    except ValueError as exc:
        raise StoreError(f"store table {path} is not valid JSON: {exc}") from exc
    if not isinstance(table, dict) or table.get("format") not in (
        TABLE_FORMAT,
        LEGACY_TABLE_FORMAT,
    ):
        raise StoreError(f"store table {path}: expected format {TABLE_FORMAT!r}")
    # [Note: extents, sizes and data checksums all come from the table, so a
    #  damaged table could point reads at the wrong bytes or skip verifying
    #  them; its own checksum refuses it first. /1 tables had none.]
    if table["format"] == TABLE_FORMAT and table.get("crc32c") != _table_crc(table):
        raise StoreError(
            f"store table {path}: checksum mismatch (stored {table.get('crc32c')!r}, computed "
            f"{_table_crc(table)}); the table is damaged, its store cannot be reopened safely"
        )
    return table


def _free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------------
# the tier


def _reopen_locked(path: Path, lock_fd: int, aio: AioConfig) -> AioFile:
    """An I/O engine on the very file ``lock_fd`` has open and locked.

    [Note: the I/O engine opens the file again (with O_DIRECT), by name. Through
    ``/proc/self/fd/N`` the kernel reopens the locked inode itself, whatever
    the path names by then; the path must still name it too (a table or a
    later reopen goes by the path), else StoreError. Without /proc the path is
    opened and its device and inode compared with the locked descriptor's.]
    """
    locked = os.fstat(lock_fd)
    via_fd = Path(f"/proc/self/fd/{lock_fd}")
    if via_fd.exists():
        file = AioFile(via_fd, "r+", config=aio)
        file.path = path  # messages name the swap file, not the descriptor
    else:  # pragma: no cover - Linux without /proc
        file = AioFile(path, "r+", config=aio, follow_symlinks=False)
    if not same_file(path, lock_fd):
        file.close()
        raise StoreError(
            f"swap file {path} was replaced while the store opened it (the path no longer "
            f"names the locked file, inode {locked.st_ino}); another program is changing the "
            "swap directory"
        )
    return file


class SwapStripe:
    """One swap file: its lock descriptor and its asynchronous I/O engine."""

    def __init__(
        self, directory: Path, path: Path, lock_fd: int, aio: AioConfig, faults: FaultPlan | None
    ) -> None:
        self.directory = directory
        self.path = path
        self.lock_fd = lock_fd
        file = _reopen_locked(path, lock_fd, aio)
        self.file: AioFile | FaultyAioFile = file if faults is None else FaultyAioFile(file, faults)

    def close(self) -> None:
        self.file.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


class NvmeTier:
    """Striped swap space with a byte budget.

    Args:
        paths: swap directories, one stripe each (created 0700 if missing).
        budget: bytes of swap space (preallocated now), or None to grow on
            demand up to what the filesystems have free.
        stripe_unit: bytes dealt to one stripe before moving to the next.
        aio: I/O engine settings of every stripe.
        persistent: keep the files and a table at close, reopen them.
    """

    kind = TierKind.NVME

    def __init__(
        self,
        paths: tuple[str | os.PathLike, ...],
        *,
        budget: int | None,
        stripe_unit: int,
        aio: AioConfig,
        persistent: bool,
    ) -> None:
        if not paths:
            raise ValueError("nvme_paths: expected at least one directory")
        if stripe_unit <= 0 or stripe_unit % 4096:
            raise ValueError(
                f"stripe_unit: expected a positive multiple of 4096, got {stripe_unit}"
            )
        self.dirs = [check_swap_path(p) for p in paths]
        if len(set(self.dirs)) != len(self.dirs):
            raise ValueError(f"nvme_paths: each directory may appear once, got {list(paths)}")
        self.unit = stripe_unit
        self.persistent = persistent
        self.aio = aio
        self.stripes: list[SwapStripe] = []
        self.peak = 0
        self.removed_stale: list[Path] = []
        self._pending_free: list[Extent] = []
        self.table: dict | None = None
        self._dir_locks: list[int] = []
        # [Note: injected faults (tests only) wrap every swap file; see tiermem.faults.]
        self.faults = FaultPlan.from_env()
        S = len(self.dirs)
        self.limit = None if budget is None else (budget // (S * self.unit)) * S * self.unit
        if budget is not None and budget < 0:
            raise ValueError(f"nvme_bytes must be >= 0 or None, got {budget}")
        try:
            for d in self.dirs:
                make_private_dir(d)
            if persistent:
                # locked before the table is read: it may be changing under its owner
                for d in self.dirs:
                    self._dir_locks.append(lock_directory(d))
                self.table = read_table(self.dirs[0])
            else:
                for d in self.dirs:
                    self.removed_stale += remove_stale_files(d)
            self.store_id = self.table["store_id"] if self.table else uuid.uuid4().hex
            for i, d in enumerate(self.dirs):
                self.stripes.append(self._open_stripe(i, d))
            self.alloc = ExtentAllocator()
            if self.table:
                self._adopt_table(self.table)
            elif self.limit:
                self._grow_to(self.limit, "(preallocation of nvme_bytes)")
        except BaseException:
            self.close(remove=not persistent)
            raise

    # ---- files ----
    def _header(self, index: int) -> bytes:
        meta = json.dumps(
            {
                "store_id": self.store_id,
                "stripe": index,
                "stripes": len(self.dirs),
                "pid": os.getpid(),
                "unit": self.unit,
            }
        ).encode()
        return (SWAP_MAGIC + meta + b"\n").ljust(HEADER_BYTES, b"\0")

    def _open_stripe(self, index: int, directory: Path) -> SwapStripe:
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        if self.persistent:
            path = directory / PERSISTENT_SWAP_NAME
            fd = open_nofollow(path, flags | (0 if self.table else os.O_CREAT))
        else:
            n = 0
            while True:
                path = directory / f"tiermem-{os.getpid()}-{n}.swap"
                try:
                    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                    break
                except FileExistsError:
                    n += 1
        try:
            if not _try_lock(fd):
                raise StoreError(f"swap file {path} is in use by another process")
            if self.table:
                head = os.pread(fd, HEADER_BYTES, 0)
                try:
                    meta = json.loads(head[len(SWAP_MAGIC) :].split(b"\n", 1)[0])
                except ValueError:
                    meta = {}
                if (
                    not head.startswith(SWAP_MAGIC)
                    or meta.get("store_id") != self.store_id
                    or (meta.get("stripe") != index)
                ):
                    raise StoreError(
                        f"swap file {path} does not belong to this store as stripe {index} "
                        f"(store id {self.store_id}); the swap directories must be given in "
                        "the order they were created with"
                    )
            else:
                os.ftruncate(fd, 0)
                os.pwrite(fd, self._header(index), 0)
                if self.persistent:
                    os.fsync(fd)
            os.fchmod(fd, 0o600)
            return SwapStripe(directory, path, fd, self.aio, self.faults)
        except BaseException:
            if not self.persistent and same_file(path, fd):
                path.unlink(missing_ok=True)
            os.close(fd)
            raise

    def _grow_to(self, capacity: int, name: str) -> None:
        """Make the logical space ``capacity`` bytes (fallocate every stripe)."""
        S = len(self.stripes)
        per_stripe = -(-capacity // (S * self.unit)) * self.unit
        capacity = per_stripe * S
        old_per_stripe = self.alloc.capacity // S
        # free-space check per filesystem before anything is written
        need_by_dev: dict[int, tuple[int, list[Path]]] = {}
        for s in self.stripes:
            dev = os.stat(s.directory).st_dev
            extra = max(per_stripe - old_per_stripe, 0)
            prev, files = need_by_dev.get(dev, (0, []))
            need_by_dev[dev] = (prev + extra, [*files, s.path])
        for need, files in need_by_dev.values():
            free = _free_bytes(files[0].parent)
            if need > free:
                raise StoreError(
                    f"swap disk full: growing {', '.join(map(str, files))} for tensor {name} "
                    f"needs {need} more bytes, the filesystem has {free} free"
                )
        for s in self.stripes:
            try:
                s.file.allocate(HEADER_BYTES + per_stripe)
            except OSError as exc:
                raise StoreError(
                    f"cannot grow swap file {s.path} to {HEADER_BYTES + per_stripe} bytes for "
                    f"tensor {name}: {os.strerror(exc.errno or errno_mod.EIO)}"
                ) from exc
        self.alloc.extend(capacity)

    def _adopt_table(self, table: dict) -> None:
        S = len(self.dirs)
        if table.get("stripes") != S or table.get("stripe_unit") != self.unit:
            raise StoreError(
                f"store table in {self.dirs[0]} has {table.get('stripes')} stripes of "
                f"{table.get('stripe_unit')} bytes; the config gives {S} of {self.unit}"
            )
        where = f"store table {self.dirs[0] / TABLE_NAME}"
        capacity = table.get("capacity")
        if not is_int(capacity) or capacity < 0 or capacity % (S * self.unit):
            raise StoreError(
                f"{where}: capacity {capacity!r} is not a multiple of {S} stripes of "
                f"{self.unit} bytes"
            )
        for s in self.stripes:
            if s.file.size() < HEADER_BYTES + capacity // S:
                raise StoreError(f"swap file {s.path} is shorter than its table says")
        self.alloc.extend(capacity)
        tensors = table.get("tensors")
        if not isinstance(tensors, dict):
            raise StoreError(f"{where}: 'tensors' is not a JSON object")
        for name, rec in tensors.items():
            offset, length = check_extent(rec, capacity, where=f"{where}: tensor {name!r}")
            try:
                self.alloc.reserve(offset, length)
            except ValueError:
                raise StoreError(
                    f"{where}: tensor {name!r}: extent of {length} bytes at {offset} overlaps "
                    "another tensor's"
                ) from None
        self.peak = self.alloc.used

    # ---- space ----
    @property
    def used(self) -> int:
        return self.alloc.used

    @property
    def budget(self) -> int:
        if self.limit is not None:
            return self.limit
        free_by_dev = {os.stat(s.directory).st_dev: _free_bytes(s.directory) for s in self.stripes}
        return self.alloc.capacity + sum(free_by_dev.values())

    def stats(self) -> dict[str, int]:
        return {
            "used": self.used,
            "budget": self.budget,
            "peak": self.peak,
            "capacity": self.alloc.capacity,
        }

    def allocate(self, nbytes: int, name: str) -> Extent:
        """A new extent for ``nbytes`` of tensor ``name`` (space is preallocated)."""
        length = round_up(max(nbytes, 1))
        if self.limit is not None and self.alloc.used + length > self.limit:
            raise StoreBudgetError(
                f"NVME tier: {length} bytes needed for tensor {name!r}, {self.alloc.used} of "
                f"its {self.limit}-byte budget (nvme_bytes) in use"
            )
        off = self.alloc.take(length)
        if off is None:
            if self.limit is not None:
                raise StoreBudgetError(
                    f"NVME tier: no free extent of {length} bytes for tensor {name!r} "
                    f"(largest free run {self.alloc.largest_free()} of the {self.limit}-byte "
                    "budget; fragmented)"
                )
            S = len(self.stripes)
            grow = max(length, GROW_CHUNK)
            free = min(_free_bytes(s.directory) for s in self.stripes) * S
            if grow > length and grow > free:
                grow = max(length, (free // 2 // (S * self.unit)) * S * self.unit)
            self._grow_to(self.alloc.capacity + grow, repr(name))
            off = self.alloc.take(length)
            if off is None:  # pragma: no cover - growth always leaves room
                raise StoreError(f"NVME tier: allocation of {length} bytes for {name!r} failed")
        self.peak = max(self.peak, self.alloc.used)
        return Extent(off, length)

    def release(self, extent: Extent) -> None:
        """Free an extent. In persistent mode the space stays reserved until the
        next table commit (the committed table may still point at it)."""
        if self.persistent:
            self._pending_free.append(extent)
        else:
            self.alloc.release(extent.offset, extent.length)

    # ---- I/O ----
    def pieces(self, extent: Extent, nbytes: int) -> list[tuple[int, int, int, int]]:
        """(stripe, file offset, buffer offset, length) runs covering ``nbytes``
        of the extent, merged where file and buffer are both contiguous."""
        U, S = self.unit, len(self.stripes)
        out: list[list[int]] = []
        pos, end = extent.offset, extent.offset + min(nbytes, extent.length)
        while pos < end:
            u, within = divmod(pos, U)
            n = min(U - within, end - pos)
            stripe, foff, boff = u % S, HEADER_BYTES + (u // S) * U + within, pos - extent.offset
            last = out[-1] if out else None
            if (
                last
                and last[0] == stripe
                and last[1] + last[3] == foff
                and last[2] + last[3] == boff
            ):
                last[3] += n
            else:
                out.append([stripe, foff, boff, n])
            pos += n
        return [tuple(p) for p in out]  # type: ignore[misc]

    def files_of(self, extent: Extent) -> str:
        """The swap files an extent lives in, for messages."""
        idx = sorted({p[0] for p in self.pieces(extent, extent.length)})
        return ", ".join(str(self.stripes[i].path) for i in idx)

    def _submit(self, op: str, extent: Extent, buf: torch.Tensor) -> list[AioRequest]:
        reqs = []
        try:
            for stripe, foff, boff, n in self.pieces(extent, buf.numel()):
                f = self.stripes[stripe].file
                piece = buf[boff : boff + n]
                reqs.append(
                    f.submit_read(piece, foff) if op == "read" else f.submit_write(piece, foff)
                )
        except BaseException:
            # [Note: the caller releases the extent and the buffer when this
            #  raises: the pieces already issued must finish first.]
            for r in reqs:
                try:
                    r.wait()
                except OSError:
                    pass
            raise
        return reqs

    def submit_read(self, extent: Extent, buf: torch.Tensor) -> list[AioRequest]:
        """Start reading ``buf.numel()`` bytes of ``extent`` into uint8 ``buf``."""
        return self._submit("read", extent, buf)

    def submit_write(self, extent: Extent, buf: torch.Tensor) -> list[AioRequest]:
        """Start writing uint8 ``buf`` into ``extent``."""
        return self._submit("write", extent, buf)

    def sync(self) -> None:
        for s in self.stripes:
            s.file.sync()

    # ---- persistence ----
    def commit(self, tensors: dict[str, dict]) -> None:
        """Make the data durable and the table point at it (persistent mode)."""
        self.sync()
        table = {
            "format": TABLE_FORMAT,
            "store_id": self.store_id,
            "stripes": len(self.stripes),
            "stripe_unit": self.unit,
            "capacity": self.alloc.capacity,
            "files": [str(s.path) for s in self.stripes],
            "tensors": tensors,
        }
        write_table_atomic(self.dirs[0], table)
        self.table = table
        for ext in self._pending_free:
            self.alloc.release(ext.offset, ext.length)
        self._pending_free.clear()

    def close(self, *, remove: bool) -> None:
        """Close every stripe; remove the files (scratch mode); unlock the directories."""
        try:
            for s in self.stripes:
                ours = remove and s.lock_fd >= 0 and same_file(s.path, s.lock_fd)
                try:
                    s.close()
                finally:
                    if ours:  # never a file put in its place
                        s.path.unlink(missing_ok=True)
            self.stripes = []
        finally:
            for fd in self._dir_locks:
                os.close(fd)
            self._dir_locks = []
