"""A filesystem that refuses O_DIRECT: buffered I/O, said so, data intact."""

from __future__ import annotations

import errno

import pytest
import torch
from conftest import BACKENDS

from tiermem.aio import AioConfig, AioFile
from tiermem.buffers import HostBufferPool


@pytest.mark.parametrize("backend", ("auto",) + BACKENDS)
def test_buffered_fallback_roundtrip(no_direct_dir, backend):
    pool = HostBufferPool(8 << 20)
    cfg = AioConfig(backend=backend, block_size=64 << 10, queue_depth=8)
    with AioFile(no_direct_dir / "f.bin", "w+", config=cfg) as f:
        assert not f.direct
        assert "O_DIRECT refused by ramfs" in f.reason
        if backend == "libaio":
            # Linux AIO is synchronous without O_DIRECT: the engine says so and uses threads.
            assert f.backend == "threads" and "libaio" in f.reason
        src = pool.allocate((1 << 20) + 77)
        src.tensor().copy_(torch.randint(0, 256, (src.nbytes,), dtype=torch.uint8))
        f.write(src.tensor(), 4096)
        dst = pool.allocate(src.nbytes)
        f.read_into(dst.tensor(), 4096)
        assert torch.equal(dst.tensor(), src.tensor())


def test_direct_on_is_an_error_when_refused(no_direct_dir):
    with pytest.raises(OSError) as ei:
        AioFile(no_direct_dir / "f.bin", "w+", config=AioConfig(direct="on"))
    assert ei.value.errno == errno.EINVAL
    assert str(no_direct_dir / "f.bin") in str(ei.value)


def test_direct_off_is_reported(tmp_path):
    with AioFile(tmp_path / "f.bin", "w+", config=AioConfig(direct="off")) as f:
        assert not f.direct
        assert "O_DIRECT off" in f.reason
