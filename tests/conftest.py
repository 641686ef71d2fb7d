"""Shared fixtures: scratch directories on real filesystems with given properties."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

BACKENDS = ("io_uring", "libaio", "threads")


@pytest.fixture(autouse=True, scope="session")
def _tiermem_cache_dir(tmp_path_factory):
    """`tiermem bench` saves its last result for `tiermem plan`: keep tests' results (and the
    ones plan reads) out of the user's ~/.cache (subprocesses inherit the variable)."""
    os.environ["TIERMEM_CACHE_DIR"] = str(tmp_path_factory.mktemp("tiermem-cache"))
    yield


def _mount(fstype: str, target: Path, options: str | None) -> str | None:
    """Mount a small filesystem; return None or the reason it could not be done."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mount", "-t", fstype]
    if options:
        cmd += ["-o", options]
    cmd += [fstype, str(target)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run mount: {exc}"
    if res.returncode != 0:
        return f"mount -t {fstype} refused here: {res.stderr.strip() or res.returncode}"
    return None


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30)


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 4 MiB tmpfs, for real ENOSPC."""
    target = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    why = _mount("tmpfs", target, "size=4m,mode=0700")
    if why:
        pytest.skip(f"needs a size-limited tmpfs: {why}")
    yield target
    _umount(target)


@pytest.fixture
def no_direct_dir(tmp_path: Path):
    """A directory on a filesystem that refuses O_DIRECT (ramfs)."""
    target = tmp_path / f"ramfs-{uuid.uuid4().hex[:8]}"
    why = _mount("ramfs", target, "mode=0700")
    if why:
        pytest.skip(f"needs a filesystem refusing O_DIRECT (ramfs): {why}")
    probe = target / "probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        pass
    else:
        os.close(fd)
        _umount(target)
        pytest.skip("ramfs accepts O_DIRECT on this kernel; no refusing filesystem to test")
    yield target
    _umount(target)
