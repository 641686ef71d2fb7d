"""Host buffer pool: alignment, zero-copy views, budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiermem.buffers import HostBufferPool


def test_aligned_and_zero_copy():
    pool = HostBufferPool(1 << 20)
    buf = pool.allocate(10_000)
    assert buf.ptr % 4096 == 0
    assert buf.capacity == 12288
    t = buf.tensor(torch.float32)
    a = buf.numpy(np.float32)
    assert t.data_ptr() == buf.ptr == a.ctypes.data
    t[:5] = torch.arange(5, dtype=torch.float32)
    np.testing.assert_array_equal(a[:5], np.arange(5, dtype=np.float32))
    shaped = buf.tensor(torch.bfloat16, shape=(10, 20))
    assert shaped.shape == (10, 20) and shaped.data_ptr() == buf.ptr


def test_budget_is_enforced_and_named():
    pool = HostBufferPool(64 << 10)
    a = pool.allocate(40 << 10)
    with pytest.raises(MemoryError, match="65536-byte budget"):
        pool.allocate(40 << 10)
    a.release()
    b = pool.allocate(40 << 10)  # fits again after release
    assert pool.bytes_in_use == 40 << 10
    b.release()
    assert pool.bytes_in_use == 0
    assert pool.stats().peak_bytes == 40 << 10


def test_released_memory_is_reused_and_views_stay_valid():
    pool = HostBufferPool(1 << 20)
    a = pool.allocate(8192)
    view = a.tensor()
    view.fill_(3)
    ptr = a.ptr
    a.release()
    assert view.sum().item() == 3 * 8192  # the view still owns live memory
    b = pool.allocate(8192)
    assert b.ptr == ptr
    with pytest.raises(ValueError, match="after release"):
        a.tensor()


def test_shape_larger_than_buffer_is_refused():
    pool = HostBufferPool(1 << 20)
    buf = pool.allocate(4096)
    with pytest.raises(ValueError, match="needs 8192 bytes"):
        buf.tensor(torch.float32, shape=(2048,))


def test_mlock_is_attempted():
    pool = HostBufferPool(1 << 20, lock=True)
    buf = pool.allocate(4096)
    buf.tensor().fill_(1)
    assert pool.stats().locked
    assert pool.lock_error in (0, 1, 11, 12)  # 0 or EPERM/EAGAIN/ENOMEM under a low ulimit -l
