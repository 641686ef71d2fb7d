"""Checks that a swap directory, its files and its table are the store's own.

What :mod:`tiermem.store.nvme` checks before it trusts what it finds on disk:
who owns and who can write the swap directory and its files, that a path
still names the file the store locked, and that a table's extents are sane.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from tiermem.buffers import ALIGNMENT
from tiermem.store.errors import StoreError

__all__ = ["check_extent", "check_owner", "check_private_dir", "is_int", "same_file"]

logger = logging.getLogger("tiermem.store")


def check_private_dir(path: Path) -> None:
    """Refuse a swap directory another user owns or (sticky, like /tmp) shares;
    take group and other write permission away from one of ours, saying so.

    [Note: whoever can write the directory can replace or remove the swap,
    table and lock files in it; a mode of 0750 or 0755 is kept (the files
    themselves are 0600). Tightened rather than refused: the directory is the
    caller's own, given as the swap directory.]
    """
    st = os.stat(path)
    uid = os.getuid()
    if st.st_uid != uid:
        raise StoreError(
            f"swap directory {path} belongs to uid {st.st_uid}, not to this user (uid {uid}); "
            "give a directory of your own"
        )
    loose = stat.S_IMODE(st.st_mode) & (stat.S_IWGRP | stat.S_IWOTH)
    if not loose:
        return
    if st.st_mode & stat.S_ISVTX:
        raise StoreError(
            f"swap directory {path} is shared (mode {stat.S_IMODE(st.st_mode):o}, writable by "
            "others, sticky); give a private directory inside it instead"
        )
    old = stat.S_IMODE(st.st_mode)
    os.chmod(path, old & ~loose)
    logger.warning(
        "swap directory %s had mode %o (others could replace its files); changed it to %o",
        path,
        old,
        old & ~loose,
    )


def check_owner(fd: int, path: Path) -> None:
    """StoreError unless the file open as ``fd`` (at ``path``) belongs to this user."""
    st = os.fstat(fd)
    if st.st_uid != os.getuid():
        raise StoreError(
            f"{path} belongs to uid {st.st_uid}, not to this user (uid {os.getuid()}); tiermem "
            "only uses swap, table and lock files it made (remove it)"
        )


def same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    locked = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (locked.st_dev, locked.st_ino)


def is_int(value: object) -> bool:
    """Whether a JSON value is an integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_extent(rec: object, capacity: int, *, where: str) -> tuple[int, int]:
    """(offset, length) of a table record, or StoreError (prefixed ``where``) unless
    they are integers, aligned (4 KiB), the length positive and the extent inside
    ``capacity``.

    [Note: the table's checksum catches damage, not a table written by other
    code; an extent outside the files or across another one would read or,
    worse, overwrite the wrong bytes. Overlaps are found by reserving the
    extents in the allocator.]
    """
    if not isinstance(rec, dict):
        raise StoreError(f"{where}: record is not a JSON object")
    offset, length = rec.get("offset"), rec.get("length")
    if not is_int(offset) or not is_int(length):
        raise StoreError(f"{where}: offset {offset!r} and length {length!r} must be integers")
    if offset < 0 or offset % ALIGNMENT or length <= 0 or length % ALIGNMENT:
        raise StoreError(
            f"{where}: extent of {length} bytes at {offset}: offset and length must be "
            f"multiples of {ALIGNMENT}, the length positive"
        )
    if offset + length > capacity:
        raise StoreError(
            f"{where}: extent of {length} bytes at {offset} ends past the swap space "
            f"({capacity} bytes)"
        )
    return offset, length
