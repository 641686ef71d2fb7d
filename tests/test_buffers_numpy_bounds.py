"""HostBuffer.numpy(shape=...) refuses a view larger than the buffer, as tensor() does
(a 16 MiB view of a 4 KiB buffer, written to, segfaulted; issue 18, item 5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiermem.buffers import HostBufferPool


def test_numpy_view_larger_than_buffer_is_refused():
    pool = HostBufferPool(1 << 20)
    buf = pool.allocate(4096)
    with pytest.raises(ValueError, match="needs 16777216 bytes, buffer has 4096"):
        buf.numpy(np.float32, shape=(1024, 4096))
    with pytest.raises(ValueError, match="buffer has 4096"):
        buf.numpy(np.uint8, shape=(4097,))
    with pytest.raises(ValueError, match="buffer has 4096"):
        buf.tensor(torch.uint8, shape=(4097,))


def test_numpy_view_that_fits_is_given():
    pool = HostBufferPool(1 << 20)
    buf = pool.allocate(4096)
    a = buf.numpy(np.float32, shape=(32, 32))
    assert a.shape == (32, 32) and a.ctypes.data == buf.ptr
    a[:] = 7.0
    assert buf.numpy(np.float32)[1023] == 7.0
    assert buf.numpy(np.uint8, shape=(0,)).size == 0
