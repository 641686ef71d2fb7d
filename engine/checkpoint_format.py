"""The on-disk format of tiermem checkpoints: safetensors files, a JSON manifest, atomic commits.

This module knows nothing of engines; :mod:`tiermem.engine.checkpoint` decides
what goes in. A checkpoint is a directory ``SAVE_DIR/TAG`` holding

* ``rankNNNNN.safetensors``: the tensors one rank wrote, as standard
  safetensors files (8-byte little-endian header length, JSON header of
  ``dtype``/``shape``/``data_offsets``, raw little-endian bytes). They are
  written front to back by :class:`SafetensorsWriter`, one piece at a time,
  so nothing is gathered whole in memory, and they load with the
  ``safetensors`` library;
* ``manifest.json``: everything else (see :func:`write_manifest`), with the
  format name and version, the size and CRC32C of every tensor file, and a
  CRC32C of itself.

``SAVE_DIR/latest`` names the newest complete tag.

[Note: atomicity. Files are written into the staging directory
``SAVE_DIR/.TAG.tmp`` and fsynced one by one; the staging directory is
fsynced, renamed to ``TAG`` (an existing ``TAG`` is swapped out atomically
with ``renameat2(RENAME_EXCHANGE)`` and then deleted), the parent is fsynced,
and only then ``latest`` is replaced (written to ``.latest.tmp``, fsynced,
renamed, parent fsynced). A process killed at any point leaves either the
old ``latest`` naming the old, complete checkpoint or the new one naming the
new, complete checkpoint; staging leftovers are removed by the next save.
Without ``renameat2`` an existing ``TAG`` is first renamed to ``.TAG.old``;
:func:`resolve_checkpoint` falls back to that copy if a kill came between
the two renames.]

[Note: no pickle anywhere. Tensors are safetensors, everything else JSON;
JSON floats round-trip exactly (``repr``), so scheduler and loss-scaler
state come back bit for bit.]
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import json
import logging
import os
import re
import shutil
import stat
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tiermem.checksum import crc32c
from tiermem.durable import fsync_dir

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CheckpointCorruptError",
    "CheckpointError",
    "FileRecord",
    "SafetensorsReader",
    "SafetensorsWriter",
    "TensorEntry",
    "check_json",
    "commit_staging",
    "file_checksum",
    "STAGING_MARKER",
    "member_path",
    "pause_point",
    "prepare_staging",
    "read_latest",
    "read_manifest",
    "resolve_checkpoint",
    "staging_dir",
    "validate_tag",
    "write_latest",
    "write_manifest",
]

logger = logging.getLogger("tiermem.engine.checkpoint")

FORMAT_NAME = "tiermem-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LATEST = "latest"
_MAX_HEADER = 256 << 20
_READ_CHUNK = 16 << 20

_DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_DTYPES = {name: dtype for dtype, name in _DTYPE_NAMES.items()}


class CheckpointError(Exception):
    """A checkpoint cannot be written or read as asked."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint file does not hold what its manifest says (names the file)."""


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of ``dtype`` (``F32``, ``BF16``...)."""
    try:
        return _DTYPE_NAMES[dtype]
    except KeyError:
        raise CheckpointError(f"dtype {dtype} cannot be stored in a checkpoint") from None


def dtype_from_name(name: str, *, where: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name; ``where`` names the file for errors."""
    try:
        return _DTYPES[name]
    except (KeyError, TypeError):
        raise CheckpointCorruptError(f"{where}: unknown dtype {name!r}") from None


def _byte_view(tensor: torch.Tensor):
    """The bytes of a contiguous CPU tensor as a numpy uint8 array (no copy)."""
    flat = tensor.reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat.view(torch.uint8).numpy()


# -- safetensors ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: its key, dtype and shape."""

    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Elements."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes of data."""
        return self.numel * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True)
class FileRecord:
    """A written file: its name (in the checkpoint directory), size and CRC32C."""

    name: str
    nbytes: int
    crc32c: int

    def to_json(self) -> dict[str, Any]:
        """The manifest form."""
        return {"bytes": self.nbytes, "crc32c": f"{self.crc32c:08x}"}


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise an OSError that names no file (``f.write`` on a full disk) as one
    naming ``path``, so a failed save says which file could not be written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, f"{exc.strerror or exc}: writing {path}", str(path)) from exc


class SafetensorsWriter:
    """Writes one safetensors file front to back, one tensor at a time.

    The entries (keys, dtypes, shapes) are fixed up front, so the header is
    written first and every :meth:`write` appends the next tensor's bytes;
    the tensors must come in the entries' order. :meth:`close` fsyncs and
    returns the file's size and CRC32C.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        entries: Sequence[TensorEntry],
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._entries = list(entries)
        header: dict[str, Any] = {}
        if metadata:
            header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
        offset = 0
        for entry in self._entries:
            if entry.key in header or entry.key == "__metadata__":
                raise CheckpointError(f"{self.path.name}: duplicate tensor key {entry.key!r}")
            end = offset + entry.nbytes
            header[entry.key] = {
                "dtype": dtype_name(entry.dtype),
                "shape": list(entry.shape),
                "data_offsets": [offset, end],
            }
            offset = end
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        prefix = struct.pack("<Q", len(raw)) + raw
        self._next = 0
        self._crc = crc32c(prefix)
        self._size = len(prefix)
        self._file = open(self.path, "xb")  # noqa: SIM115 - closed in close()
        try:
            with writing(self.path):
                self._file.write(prefix)
        except BaseException:
            self._file.close()
            raise

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._file.closed:
            self._file.close()

    def write(self, key: str, tensor: torch.Tensor) -> None:
        """Append the next tensor's bytes (``key`` must be the next entry's)."""
        if self._next >= len(self._entries):
            raise CheckpointError(f"{self.path.name}: no tensor {key!r} left to write")
        entry = self._entries[self._next]
        if key != entry.key or tensor.dtype != entry.dtype or tensor.numel() != entry.numel:
            raise CheckpointError(
                f"{self.path.name}: expected tensor {entry.key!r} ({entry.dtype}, "
                f"{entry.numel} elements) next, got {key!r} ({tensor.dtype}, {tensor.numel()})"
            )
        data = _byte_view(tensor.detach().to("cpu").contiguous())
        self._crc = crc32c(data, self._crc)
        with writing(self.path):
            self._file.write(memoryview(data))
        self._size += data.nbytes
        self._next += 1

    def close(self) -> FileRecord:
        """Check every tensor was written, flush, fsync; the file's record."""
        if self._next != len(self._entries):
            missing = self._entries[self._next].key
            raise CheckpointError(f"{self.path.name}: tensor {missing!r} was never written")
        with writing(self.path):
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return FileRecord(self.path.name, self._size, self._crc)


@dataclass(frozen=True)
class _Stored:
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int


class SafetensorsReader:
    """Reads element ranges of the tensors of a safetensors file, without mapping it whole.

    The header is validated on open: offsets inside the file, no holes or
    overlaps, sizes matching dtype and shape. Anything else raises
    :class:`CheckpointCorruptError` naming the file, as does a path that is
    not a regular file (or, with ``follow_symlinks=False``, is a symlink).
    """

    def __init__(self, path: str | os.PathLike, *, follow_symlinks: bool = True) -> None:
        self.path = Path(path)
        fd = open_regular(self.path, follow_symlinks=follow_symlinks)
        self._file = open(fd, "rb")  # noqa: SIM115 - closed in close()
        try:
            self.entries, self.metadata = self._parse()
        except BaseException:
            self._file.close()
            raise

    def _bad(self, what: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(f"{self.path}: not a valid safetensors file ({what})")

    def _parse(self) -> tuple[dict[str, _Stored], dict[str, str]]:
        size = os.fstat(self._file.fileno()).st_size
        head = self._file.read(8)
        if len(head) != 8:
            raise self._bad("shorter than 8 bytes")
        (hlen,) = struct.unpack("<Q", head)
        if hlen > min(_MAX_HEADER, size - 8):
            raise self._bad(f"header length {hlen} exceeds the file")
        raw = self._file.read(hlen)
        try:
            header = json.loads(raw.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise self._bad(f"header is not JSON: {exc}") from None
        if not isinstance(header, dict):
            raise self._bad("header is not a JSON object")
        metadata = header.pop("__metadata__", {}) or {}
        base = 8 + hlen
        entries: dict[str, _Stored] = {}
        spans = []
        for key, info in header.items():
            try:
                dtype = dtype_from_name(info["dtype"], where=str(self.path))
                shape = tuple(int(d) for d in info["shape"])
                begin, end = (int(x) for x in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as exc:
                raise self._bad(f"entry {key!r} is malformed: {exc}") from None
            numel = 1
            for d in shape:
                numel *= d
            if end - begin != numel * torch.empty((), dtype=dtype).element_size() or begin < 0:
                raise self._bad(f"entry {key!r}: offsets {begin}..{end} do not match its shape")
            entries[key] = _Stored(dtype, shape, base + begin, base + end)
            spans.append((begin, end))
        position = 0
        for begin, end in sorted(spans):
            if begin != position:
                raise self._bad(f"data has a hole or overlap at byte {base + begin}")
            position = end
        if base + position != size:
            raise self._bad(f"data ends at byte {base + position}, the file has {size}")
        return entries, dict(metadata)

    def __enter__(self) -> SafetensorsReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def read_into(self, key: str, out: torch.Tensor, *, start: int = 0) -> None:
        """Fill ``out`` (any device, any dtype) with elements ``start..start + out.numel()``
        of tensor ``key``."""
        stored = self.entries.get(key)
        if stored is None:
            raise CheckpointCorruptError(f"{self.path}: has no tensor {key!r}")
        esize = torch.empty((), dtype=stored.dtype).element_size()
        n = out.numel()
        if start < 0 or stored.begin + (start + n) * esize > stored.end:
            raise CheckpointCorruptError(
                f"{self.path}: tensor {key!r} has no elements {start}..{start + n}"
            )
        direct = out.device.type == "cpu" and out.dtype == stored.dtype and out.is_contiguous()
        buf = out if direct else torch.empty(n, dtype=stored.dtype)
        view = memoryview(_byte_view(buf))
        got = os.preadv(self._file.fileno(), [view], stored.begin + start * esize)
        if got != view.nbytes:
            raise CheckpointCorruptError(f"{self.path}: short read of tensor {key!r}")
        if not direct:
            out.copy_(buf.view(out.shape))


def open_regular(path: str | os.PathLike, *, follow_symlinks: bool = True) -> int:
    """A read-only descriptor of ``path``, which must be a regular file.

    [Note: opened with O_NONBLOCK so a FIFO named in a manifest fails here
    instead of blocking the open forever (O_NONBLOCK does nothing to reads of
    a regular file); a device such as /dev/zero would never end a checksum
    read. ``follow_symlinks=False`` (checkpoint members, which tiermem writes
    itself) adds O_NOFOLLOW.]
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise CheckpointCorruptError(
                f"{path}: is a symbolic link; checkpoint files must be regular files"
            ) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CheckpointCorruptError(f"{path}: is not a regular file ({_file_kind(mode)})")
    return fd


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _file_kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), f"mode {mode:o}")


def file_checksum(path: str | os.PathLike, *, follow_symlinks: bool = True) -> tuple[int, int]:
    """(size, CRC32C) of a regular file, read in 16 MiB pieces."""
    crc, size = 0, 0
    buf = bytearray(_READ_CHUNK)
    view = memoryview(buf)
    fd = open_regular(path, follow_symlinks=follow_symlinks)
    with open(fd, "rb", buffering=0) as f:
        while True:
            got = f.readinto(view)
            if not got:
                break
            crc = crc32c(view[:got], crc)
            size += got
    return size, crc


# -- JSON -------------------------------------------------------------------------------------
def check_json(value: Any, *, where: str) -> None:
    """Raise ``TypeError`` naming the path of the first value JSON cannot carry unchanged.

    Allowed: None, bool, int, float, str, lists/tuples of those, dicts with
    str keys. (Tuples come back as lists.)
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, where=f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is not a str (JSON keys must be strings)")
            check_json(item, where=f"{where}[{key!r}]")
        return
    raise TypeError(
        f"{where}: a {type(value).__name__} cannot be stored in the checkpoint's JSON "
        "(allowed: None, bool, int, float, str, list, dict with str keys)"
    )


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def encode_bytes(data: bytes) -> str:
    """Bytes as base64 text for the manifest."""
    return base64.b64encode(data).decode("ascii")


def decode_bytes(text: str) -> bytes:
    """The inverse of :func:`encode_bytes`."""
    return base64.b64decode(text.encode("ascii"), validate=True)


def _write_file_synced(path: Path, data: bytes) -> None:
    with writing(path), open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_manifest(directory: str | os.PathLike, manifest: Mapping[str, Any]) -> FileRecord:
    """Write ``manifest.json`` (format, version, body and the body's CRC32C), fsynced."""
    body = dict(manifest)
    body["format"] = FORMAT_NAME
    body["version"] = FORMAT_VERSION
    check_json(body, where="manifest")
    doc = {"crc32c": f"{crc32c(_canonical(body)):08x}", "manifest": body}
    data = json.dumps(doc, sort_keys=True, indent=1).encode()
    path = Path(directory) / MANIFEST
    _write_file_synced(path, data)
    return FileRecord(MANIFEST, len(data), crc32c(data))


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
    """Read and verify ``manifest.json``; :class:`CheckpointCorruptError` names what is wrong."""
    path = Path(directory) / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointCorruptError(
            f"{path}: missing; {directory} is not a complete tiermem checkpoint"
        ) from None
    try:
        doc = json.loads(raw.decode())
        body, stated = doc["manifest"], doc["crc32c"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointCorruptError(f"{path}: not a tiermem manifest ({exc})") from None
    if not isinstance(body, dict) or f"{crc32c(_canonical(body)):08x}" != stated:
        raise CheckpointCorruptError(f"{path}: checksum mismatch (the manifest was modified)")
    if body.get("format") != FORMAT_NAME:
        raise CheckpointCorruptError(f"{path}: format {body.get('format')!r}, not {FORMAT_NAME}")
    if body.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {body.get('version')!r}; this tiermem reads "
            f"version {FORMAT_VERSION}"
        )
    if "files" in body:
        _check_files(path, body["files"])
    return body


# [Note: the manifest's CRC holds no secret, so anyone can write a manifest
#  whose file names point outside the checkpoint (``../x``, ``/dev/zero``):
#  only the names tiermem itself writes are accepted, and they are opened
#  without following symlinks and must be regular files (member_path,
#  open_regular).]
_MEMBER = re.compile(r"rank[0-9]{5,9}\.safetensors")


def _check_files(manifest_path: Path, files: Any) -> None:
    if not isinstance(files, dict):
        raise CheckpointCorruptError(f"{manifest_path}: 'files' is not a JSON object")
    for name, rec in files.items():
        member_path(manifest_path.parent, name, manifest=manifest_path)
        if (
            not isinstance(rec, dict)
            or not isinstance(rec.get("bytes"), int)
            or not isinstance(rec.get("crc32c"), str)
        ):
            raise CheckpointCorruptError(
                f"{manifest_path}: files entry {name!r}: expected {{'bytes': int, "
                f"'crc32c': str}}, got {rec!r:.100}"
            )


def member_path(
    directory: str | os.PathLike, name: Any, *, manifest: str | os.PathLike | None = None
) -> Path:
    """``directory/name`` for a file a manifest lists, if ``name`` is one tiermem writes
    (``rankNNNNN.safetensors``: no separators, no ``..``); else
    :class:`CheckpointCorruptError` naming the manifest and the entry."""
    if not isinstance(name, str) or not _MEMBER.fullmatch(name):
        where = manifest if manifest is not None else Path(directory) / MANIFEST
        raise CheckpointCorruptError(
            f"{where}: files entry {name!r} is not a checkpoint file name tiermem writes "
            "(expected rankNNNNN.safetensors, a bare name in the checkpoint directory)"
        )
    return Path(directory) / name


def verify_files(directory: str | os.PathLike, files: Mapping[str, Any]) -> dict[str, str]:
    """Check size and CRC32C of each listed file; {name: what is wrong} for the bad ones.

    A name tiermem does not write raises :class:`CheckpointCorruptError`; a
    listed file that is a symlink or not a regular file is reported bad,
    naming the manifest and the entry, and is never read.
    """
    bad = {}
    manifest = Path(directory) / MANIFEST
    for name, rec in files.items():
        path = member_path(directory, name, manifest=manifest)
        try:
            size, crc = file_checksum(path, follow_symlinks=False)
        except FileNotFoundError:
            bad[name] = f"{path}: missing"
            continue
        except CheckpointCorruptError as exc:
            bad[name] = f"{manifest}: files entry {name!r}: {exc}"
            continue
        if size != rec["bytes"]:
            bad[name] = f"{path}: {size} bytes, the manifest says {rec['bytes']}"
        elif f"{crc:08x}" != rec["crc32c"]:
            bad[name] = f"{path}: CRC32C {crc:08x}, the manifest says {rec['crc32c']}"
    return bad


# -- tags, staging and commit ------------------------------------------------------------------
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,199}")


def validate_tag(tag: Any) -> str:
    """``tag`` if it is a usable directory name, else ``ValueError`` saying why."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or tag == LATEST:
        raise ValueError(
            f"tag: expected 1-200 characters of letters, digits and _.+=- not starting with "
            f"'.' or '-', and not {LATEST!r}; got {tag!r}"
        )
    return tag


def staging_dir(save_dir: str | os.PathLike, tag: str) -> Path:
    """Where a checkpoint is written before it is committed."""
    return Path(save_dir) / f".{tag}.tmp"


# [Note: a staging directory is ours only when its name is ``.TAG.tmp`` for a
#  valid tag *and* it holds this marker, written first thing by
#  prepare_staging: a user's ``.notes.tmp`` directory or another tool's
#  ``.download.tmp`` in the same folder is never removed. The marker leaves
#  with the commit (see commit_staging).]
STAGING_MARKER = ".tiermem-staging"


def _old_dir(save_dir: str | os.PathLike, tag: str) -> Path:
    return Path(save_dir) / f".{tag}.old"


def prepare_staging(save_dir: str | os.PathLike, tag: str) -> Path:
    """Create an empty staging directory for ``tag`` (holding the staging marker),
    removing leftovers of interrupted saves. Call it under
    :func:`tiermem.engine.checkpoint_lock.locked_save_dir`."""
    root = Path(save_dir)
    root.mkdir(parents=True, exist_ok=True)
    for stale in list_stale(root):
        logger.info("removing %s, left by an interrupted save", stale)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    stage = staging_dir(root, tag)
    try:
        stage.mkdir()
    except FileExistsError:
        raise CheckpointError(
            f"{stage}: exists and was not made by tiermem (it has no {STAGING_MARKER} marker); "
            f"it is in the way of saving tag {tag!r}: move it or choose another tag"
        ) from None
    try:
        _write_file_synced(stage / STAGING_MARKER, b"tiermem checkpoint staging directory\n")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)  # a full disk: leave nothing behind
        raise
    return stage


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _rename_exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2; False when the system cannot."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE): {os.strerror(err)}")


def commit_staging(save_dir: str | os.PathLike, tag: str) -> Path:
    """Make the staging directory of ``tag`` the checkpoint ``tag``, then point ``latest`` at it."""
    root = Path(save_dir)
    stage, final = staging_dir(root, tag), root / tag
    fsync_dir(stage)
    pause_point("staged")
    if final.exists() and not final.is_symlink():
        # [Note: the old checkpoint is marked before the exchange puts it at
        #  the staging name, so a save killed before it is deleted leaves a
        #  directory the next save knows as its own.]
        try:
            _write_file_synced(final / STAGING_MARKER, b"tiermem checkpoint staging directory\n")
        except BaseException:
            (final / STAGING_MARKER).unlink(missing_ok=True)
            raise
        if _rename_exchange(stage, final):
            pause_point("renamed")
            _drop_marker(final)
            fsync_dir(root)
            write_latest(root, tag)
            shutil.rmtree(stage)  # the previous contents of tag
            return final
        (final / STAGING_MARKER).unlink()
        old = _old_dir(root, tag)
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
        fsync_dir(root)
        os.rename(stage, final)
        pause_point("renamed")
        _drop_marker(final)
        fsync_dir(root)
        write_latest(root, tag)
        shutil.rmtree(old)
        return final
    if final.is_symlink():
        final.unlink()
    os.rename(stage, final)
    pause_point("renamed")
    _drop_marker(final)
    fsync_dir(root)
    write_latest(root, tag)
    return final


def _drop_marker(checkpoint: Path) -> None:
    """Remove the staging marker from a committed checkpoint (a kill before this
    leaves it there, harmlessly: the directory's name is not a staging name)."""
    (checkpoint / STAGING_MARKER).unlink(missing_ok=True)
    fsync_dir(checkpoint)


def write_latest(save_dir: str | os.PathLike, tag: str) -> None:
    """Point ``latest`` at ``tag`` atomically (temporary file, fsync, rename, fsync parent)."""
    root = Path(save_dir)
    tmp = root / f".{LATEST}.tmp"
    _write_file_synced(tmp, f"{validate_tag(tag)}\n".encode())
    os.rename(tmp, root / LATEST)
    fsync_dir(root)
    pause_point("latest")


def read_latest(save_dir: str | os.PathLike) -> str:
    """The tag ``latest`` names; errors name the file."""
    path = Path(save_dir) / LATEST
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: no 'latest' file; pass tag= or save a checkpoint in {save_dir} first"
        ) from None
    except UnicodeDecodeError:
        raise CheckpointCorruptError(f"{path}: not a tag name") from None
    try:
        return validate_tag(text)
    except ValueError:
        raise CheckpointCorruptError(f"{path}: {text[:80]!r} is not a tag name") from None


def resolve_checkpoint(save_dir: str | os.PathLike, tag: str | None) -> Path:
    """The directory of checkpoint ``tag`` (``latest``'s when None).

    With ``tag=None``, ``save_dir`` may also be a checkpoint directory itself
    (one holding ``manifest.json``).
    """
    if tag is None and (Path(save_dir) / MANIFEST).is_file():
        return Path(save_dir)
    tag = read_latest(save_dir) if tag is None else validate_tag(tag)
    path = Path(save_dir) / tag
    if path.is_dir():
        return path
    old = _old_dir(save_dir, tag)
    if old.is_dir():  # killed between the two renames of an overwrite without renameat2
        logger.warning("checkpoint %s is missing; using the interrupted overwrite's %s", path, old)
        return old
    raise FileNotFoundError(f"{path}: no such checkpoint")


def list_stale(save_dir: str | os.PathLike) -> Iterable[Path]:
    """Staging leftovers of interrupted saves in ``save_dir``: only what tiermem made.

    A directory ``.TAG.tmp`` (a valid tag) holding the staging marker, and the
    regular file ``.latest.tmp`` (:func:`write_latest`'s, which replaces it
    anyway); anything else with a similar name is someone else's, left alone.
    """
    root = Path(save_dir)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        name = p.name
        if name == f".{LATEST}.tmp":
            if stat.S_ISREG(p.lstat().st_mode):
                out.append(p)
        elif name.startswith(".") and name.endswith(".tmp") and _TAG.fullmatch(name[1:-4]):
            if p.is_dir() and not p.is_symlink() and (p / STAGING_MARKER).is_file():
                out.append(p)
    return out


# -- kill-test hook ----------------------------------------------------------------------------
PAUSE_ENV = "TIERMEM_CHECKPOINT_PAUSE_AT"


def pause_point(stage: str) -> None:
    """Test aid: with ``TIERMEM_CHECKPOINT_PAUSE_AT=STAGE:MARKER``, reaching ``STAGE``
    creates the file ``MARKER`` and sleeps forever (until the test kills the process).

    [Note: the kill-9 tests need the saver stopped at a known point; an
    environment variable reaches a subprocess without patching code. Unset,
    this costs one dictionary lookup per stage.]
    """
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    want, _, marker = spec.partition(":")
    if want != stage:
        return
    if marker:
        Path(marker).write_text(stage)
    while True:
        time.sleep(60)
