"""Write a JSON document atomically, refusing to replace an existing file unless told to."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tiermem.durable import fsync_dir, write_all

__all__ = ["write_json_atomic"]


def _link_new(tmp: Path, final: Path) -> None:
    """Give ``tmp`` the name ``final`` unless that exists.

    [Note: link, unlike rename, fails if the name exists, so no file created
    meanwhile is replaced. Filesystems without hard links fall back to a
    check-then-rename.]
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:
        if os.path.lexists(final):
            raise FileExistsError(f"{final}: file exists") from None
        os.rename(tmp, final)


def write_json_atomic(path: str | os.PathLike, doc: Any, *, overwrite: bool = False) -> Path:
    """Write ``doc`` as indented JSON to ``path``: a temporary file in the same
    directory, fsynced, then linked (or, with ``overwrite``, renamed) into place.

    A crash leaves the old file or the new one, never a half-written one.
    Raises :class:`FileExistsError` when ``path`` exists and ``overwrite`` is
    False (checked by the link itself, so a file created meanwhile is not
    replaced either).
    """
    final = Path(path)
    data = (json.dumps(doc, indent=2) + "\n").encode()
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, final)
        else:
            _link_new(tmp, final)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    fsync_dir(final.parent)
    return final
