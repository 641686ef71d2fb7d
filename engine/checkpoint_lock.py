"""The lock a checkpoint save holds on its ``save_dir``.

Only one save may write into a ``save_dir`` at a time: the stale-staging
cleanup of a second one would delete the first's staging directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tiermem.engine.checkpoint_format import CheckpointError

__all__ = ["SAVE_LOCK", "locked_save_dir"]

SAVE_LOCK = ".tiermem-save.lock"


@contextlib.contextmanager
def locked_save_dir(save_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the save lock of ``save_dir`` (created if missing) for a save.

    A second writer, in this process or another, gets :class:`CheckpointError`
    naming the directory and the holder's pid at once, and touches nothing.

    [Note: ``flock`` on ``SAVE_DIR/.tiermem-save.lock``: released by the kernel
    if the holder dies, so a killed save never leaves the directory locked.
    The lock file is removed at the end of the save to keep the directory
    tidy; a writer that locked a file someone unlinked meanwhile sees its inode
    is no longer the one at the path and tries again.]
    """
    root = Path(save_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / SAVE_LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointError(
                f"{root}: another checkpoint save into this directory is in progress (pid "
                f"{holder} holds {path}); wait for it to finish or save into another directory"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # unlinked by the previous holder as we locked it: again
    try:
        with contextlib.suppress(OSError):  # the pid only informs; a full disk is named later
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield root
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
