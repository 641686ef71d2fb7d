"""A real full disk under the engine (a 16 MiB tmpfs, or a loop-mounted ext4 image with
O_DIRECT): a clear error before or at the first write that does not fit, and nothing
written earlier is lost.

* Starting on a full disk: ``initialize`` fails before any write, naming the swap
  file and the shortfall, and leaves no swap file behind.
* The disk filled by someone else mid-run: training goes on exactly (the store's
  swap space is preallocated); a checkpoint save onto the full disk fails with the
  file named, the previous checkpoint there stays ``latest`` and resumes the run
  bit for bit.
"""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from conftest import _mount, _umount
from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps

import tiermem
from tiermem.engine.checkpoint_format import read_latest
from tiermem.store import StoreError

STEPS, SAVED_AT = 4, 2


def _mount_ext4(tmp_path: Path, target: Path) -> str | None:
    """Mount a 16 MiB ext4 image on ``target``; None or why it could not be done."""
    image = tmp_path / "ext4.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    target.mkdir()
    # no blocks reserved for root: the tests run as root and must see the disk full
    for cmd in (["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", str(image)],
                ["mount", "-o", "loop", str(image), str(target)]):  # fmt: skip
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"cannot run {cmd[0]}: {exc}"
        if res.returncode != 0:
            return f"{' '.join(cmd[:2])} refused here: {res.stderr.strip() or res.returncode}"
    return None


@pytest.fixture(params=["tmpfs", "ext4"])
def small_fs(request, tmp_path: Path):
    """A 16 MiB filesystem of the given kind, unmounted at teardown whatever happens."""
    target = tmp_path / f"{request.param}-{uuid.uuid4().hex[:8]}"
    if request.param == "tmpfs":
        why = _mount("tmpfs", target, "size=16m,mode=0700")
    else:
        why = _mount_ext4(tmp_path, target)
    if why:
        if target.is_mount():
            _umount(target)
        pytest.skip(f"needs a small {request.param} (mount as root): {why}")
    try:
        yield target
    finally:
        _umount(target)


def fill(fs: Path, *, leave: int) -> Path:
    """Take all but ``leave`` free bytes of ``fs`` with a ballast file."""
    ballast = fs / "ballast"
    fd = os.open(ballast, os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        st = os.statvfs(fs)
        free = st.f_bavail * st.f_frsize
        size = os.fstat(fd).st_size + max(free - leave, 0)
        while True:  # metadata blocks: shrink until it fits
            try:
                os.posix_fallocate(fd, 0, size)
                break
            except OSError as exc:
                if exc.errno != errno.ENOSPC or size <= 0:
                    raise
                size -= 64 << 10
        if leave == 0:  # then the last blocks, one at a time
            try:
                while True:
                    os.posix_fallocate(fd, size, 4096)
                    size += 4096
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return ballast


def test_initialize_on_a_full_disk_fails_before_writing(small_fs, tmp_path):
    ballast = fill(small_fs, leave=64 << 10)
    size = ballast.stat().st_size
    swap = small_fs / "swap"
    with pytest.raises(StoreError) as err:
        tiermem.initialize(model=make_model(), config=nvme_offload_config(swap))
    msg = str(err.value)
    assert str(swap / "tiermem_rank0") in msg and ".swap" in msg, msg
    assert "swap disk full" in msg or "No space left" in msg, msg
    assert list(swap.rglob("*")) == [swap / "tiermem_rank0"]  # no swap file left behind
    assert ballast.stat().st_size == size


def test_disk_filled_mid_run_keeps_training_and_the_last_checkpoint(small_fs, tmp_path):
    batches = make_batches(STEPS)
    reference, *_ = tiermem.initialize(
        model=make_model(), config=nvme_offload_config(tmp_path / "ref")
    )
    expected = train_steps(reference, batches)
    reference.close()

    ckpt = small_fs / "ckpt"
    engine, *_ = tiermem.initialize(
        model=make_model(), config=nvme_offload_config(small_fs / "swap")
    )
    assert train_steps(engine, batches[:SAVED_AT]) == expected[:SAVED_AT]
    engine.save_checkpoint(ckpt)
    saved = read_latest(ckpt)
    fill(small_fs, leave=0)  # another writer takes the rest of the disk
    # the swap space was preallocated: training goes on, exactly
    assert train_steps(engine, batches[SAVED_AT:]) == expected[SAVED_AT:]
    with pytest.raises(OSError) as err:  # the save does not fit: named, nothing replaced
        engine.save_checkpoint(ckpt)
    assert err.value.errno == errno.ENOSPC and str(ckpt) in str(err.value), err.value
    assert [p.name for p in ckpt.iterdir() if p.name.endswith(".tmp")] == []  # nothing left
    engine.close()
    assert read_latest(ckpt) == saved
    (small_fs / "ballast").unlink()

    resumed, *_ = tiermem.initialize(
        model=make_model(seed=3), config=nvme_offload_config(tmp_path / "r")
    )
    resumed.load_checkpoint(ckpt)
    assert resumed.global_steps == SAVED_AT
    assert train_steps(resumed, batches[SAVED_AT:]) == expected[SAVED_AT:]
    resumed.close()
