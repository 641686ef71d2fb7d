"""Durable file writes: every byte written, file and directory fsynced.

The pieces the store's table, the planner's config files and the engine's
checkpoints share (each of them had its own copy).
"""

from __future__ import annotations

import os


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the open descriptor ``fd`` (``os.write`` may
    write less than asked) and fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so a rename or a new entry in it survives a crash."""
    fd = os.open(os.fspath(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
