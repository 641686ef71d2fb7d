"""I/O errors are OSErrors naming the file, offset, length and backend; nothing silent."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import BACKENDS

from tiermem.aio import AioConfig, AioFile
from tiermem.buffers import HostBufferPool


@pytest.fixture(scope="module")
def pool():
    return HostBufferPool(32 << 20)


def test_missing_directory(tmp_path):
    path = tmp_path / "nope" / "f.bin"
    with pytest.raises(OSError) as ei:
        AioFile(path, "w+")
    assert ei.value.errno == errno.ENOENT
    assert str(path) in str(ei.value)


def test_permission_denied_as_unprivileged_user(tmp_path):
    """Run as 'nobody' (root bypasses mode bits): a 0700 root directory is refused."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o755)
    code = textwrap.dedent(
        f"""
        import os, sys
        import importlib.machinery  # everything imported before dropping privileges
        from tiermem._native import native
        from tiermem.aio import AioFile
        native.lib
        os.setgid(65534); os.setuid(65534)
        try:
            AioFile({str(private / "f.bin")!r}, "w+")
        except OSError as e:
            print(e.errno, e)
            sys.exit(0)
        sys.exit(3)
        """
    )
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(str(errno.EACCES)), res.stdout
    assert "f.bin" in res.stdout


def test_read_past_end_is_reported(tmp_path, pool):
    buf = pool.allocate(8192)
    with AioFile(tmp_path / "f.bin", "w+") as f:
        f.write(buf.tensor()[:4096], 0)
        with pytest.raises(OSError) as ei:
            f.read_into(buf.tensor(), 0)
        assert ei.value.errno == errno.ENODATA
        msg = str(ei.value)
        assert "read of 8192 bytes at offset 0" in msg and "io_uring" in msg and "f.bin" in msg


@pytest.mark.parametrize("backend", BACKENDS)
def test_injected_eio_names_the_failed_piece(tmp_path, pool, backend):
    cfg = AioConfig(backend=backend, block_size=4096, queue_depth=1)
    buf = pool.allocate(8 * 4096)
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        f.inject_faults(fail_nth=3, errno=errno.EIO)
        with pytest.raises(OSError) as ei:
            f.write(buf.tensor(), 4096)
        assert ei.value.errno == errno.EIO
        # queue depth 1: pieces complete in order, so the third piece (file offset 3*4096) failed.
        assert f"failed at file offset {3 * 4096}" in str(ei.value)
        assert backend in str(ei.value)
        # The file stays usable after the error.
        assert f.write(buf.tensor(), 0) == buf.nbytes


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_transfers_are_completed(tmp_path, pool, backend):
    cfg = AioConfig(backend=backend, block_size=16384, queue_depth=4)
    n = 64 * 16384
    src, dst = pool.allocate(n), pool.allocate(n)
    src.tensor().copy_(torch.randint(0, 256, (n,), dtype=torch.uint8))
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        f.inject_faults(short_every=3)
        before = f.pieces_submitted
        f.write(src.tensor(), 0)
        f.read_into(dst.tensor(), 0)
        resubmitted = f.pieces_submitted - before - 2 * 64
        assert resubmitted > 0  # the remainders were issued again...
    assert torch.equal(dst.tensor(), src.tensor())  # ...and nothing was lost


def test_enospc_on_a_full_filesystem(small_tmpfs, pool):
    keep = pool.allocate(1 << 20)
    keep.tensor().copy_(torch.randint(0, 256, (keep.nbytes,), dtype=torch.uint8))
    big = pool.allocate(8 << 20)
    with AioFile(small_tmpfs / "a.bin", "w+") as f:
        f.write(keep.tensor(), 0)
        f.sync()
    with AioFile(small_tmpfs / "b.bin", "w+") as g:
        with pytest.raises(OSError) as ei:
            g.write(big.tensor(), 0)
        assert ei.value.errno == errno.ENOSPC
        assert "b.bin" in str(ei.value)
        with pytest.raises(OSError) as ei2:
            g.allocate(16 << 20)
        assert ei2.value.errno == errno.ENOSPC
    # Earlier data is intact.
    back = pool.allocate(1 << 20)
    with AioFile(small_tmpfs / "a.bin", "r") as f:
        f.read_into(back.tensor(), 0)
    assert torch.equal(back.tensor(), keep.tensor())


def test_nofollow_refuses_symlink(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"x" * 4096)
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    with pytest.raises(OSError) as ei:
        AioFile(link, "r+", follow_symlinks=False)
    assert ei.value.errno == errno.ELOOP


def test_created_files_are_private(tmp_path):
    with AioFile(tmp_path / "f.bin", "x+"):
        pass
    assert (os.stat(tmp_path / "f.bin").st_mode & 0o777) == 0o600
    with pytest.raises(FileExistsError):
        AioFile(tmp_path / "f.bin", "x+")


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="block_size"):
        AioConfig(block_size=1000)
    with pytest.raises(ValueError, match="queue_depth"):
        AioConfig(queue_depth=0)
    with pytest.raises(ValueError, match="backend"):
        AioConfig(backend="spdk")


def test_closed_file_refuses_io(tmp_path, pool):
    f = AioFile(tmp_path / "f.bin", "w+")
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.write(pool.allocate(4096).tensor(), 0)
