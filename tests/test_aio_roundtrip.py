"""Data written through every backend reads back identical: odd sizes, tails, offsets, dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BACKENDS

from tiermem.aio import AioConfig, AioFile
from tiermem.buffers import HostBufferPool

SIZES = [1, 511, 4096, 4097, 65536 + 13, (3 << 20) + 4095]
OFFSETS = [0, 4096, 5 * 4096 + (1 << 20)]


@pytest.fixture(scope="module")
def pool():
    return HostBufferPool(64 << 20)


def _random_bytes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("backend", BACKENDS)
def test_roundtrip_sizes_and_offsets(tmp_path, pool, backend):
    cfg = AioConfig(backend=backend, block_size=64 << 10, queue_depth=8)
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        assert f.backend == backend and f.direct
        for i, n in enumerate(SIZES):
            for off in OFFSETS:
                src = pool.allocate(n)
                dst = pool.allocate(n)
                data = _random_bytes(n, seed=i * 7 + off)
                src.tensor().copy_(data)
                dst.tensor().fill_(0xAA)
                assert f.write(src.tensor(), off) == n
                assert f.read_into(dst.tensor(), off) == n
                assert torch.equal(dst.tensor(), data), (n, off)
                src.release()
                dst.release()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tail_write_does_not_touch_following_bytes(tmp_path, pool, backend):
    """A write ending mid-block leaves the rest of that block as it was."""
    cfg = AioConfig(backend=backend, block_size=8192, queue_depth=4)
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        base = pool.allocate(16384)
        base.tensor().fill_(0x11)
        f.write(base.tensor(), 0)
        patch = pool.allocate(4096 + 100)
        patch.tensor().fill_(0x22)
        f.write(patch.tensor(), 4096)
        back = pool.allocate(16384)
        f.read_into(back.tensor(), 0)
        t = back.tensor()
        assert (t[:4096] == 0x11).all()
        assert (t[4096 : 8192 + 100] == 0x22).all()
        assert (t[8192 + 100 :] == 0x11).all()
        assert f.size() == 16384


@pytest.mark.parametrize("backend", BACKENDS)
def test_unaligned_memory_and_offset(tmp_path, backend):
    """Plain tensors (not 4 KiB aligned) and unaligned file offsets still round-trip."""
    cfg = AioConfig(backend=backend, block_size=16384, queue_depth=4)
    raw = _random_bytes(100_003, seed=3)
    src = raw[1:]  # 1-byte-misaligned view
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        f.write(src, 777)
        dst = torch.zeros(100_002 + 1, dtype=torch.uint8)[1:]
        f.read_into(dst, 777)
        assert torch.equal(dst, src)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtypes_and_numpy(tmp_path, pool, backend):
    cfg = AioConfig(backend=backend, block_size=4096, queue_depth=16)
    with AioFile(tmp_path / "f.bin", "w+", config=cfg) as f:
        for k, dtype in enumerate((torch.float32, torch.bfloat16, torch.float16, torch.int64)):
            buf = pool.allocate(12345 * 8)
            t = buf.tensor(dtype, shape=(12345 // 2,))
            t.copy_(
                torch.randn(t.shape).to(dtype)
                if dtype.is_floating_point
                else torch.arange(t.numel())
            )
            off = k * (1 << 20)
            f.write(t, off)
            back = torch.empty_like(t)
            f.read_into(back, off)
            assert torch.equal(back, t)
            buf.release()
        arr = np.random.default_rng(0).standard_normal(9999).astype(np.float64)
        f.write(arr, 8 << 20)
        out = np.empty_like(arr)
        f.read_into(out, 8 << 20)
        np.testing.assert_array_equal(out, arr)


def test_env_var_forces_backend(tmp_path, monkeypatch):
    for name in BACKENDS:
        monkeypatch.setenv("TIERMEM_AIO_BACKEND", name)
        with AioFile(tmp_path / "f.bin", "w+") as f:
            assert f.backend == name
            assert "requested" in f.reason
    monkeypatch.setenv("TIERMEM_AIO_BACKEND", "auto")
    with AioFile(tmp_path / "f.bin", "w+") as f:
        assert f.backend == "io_uring", f.reason
        assert "io_uring available" in f.reason
