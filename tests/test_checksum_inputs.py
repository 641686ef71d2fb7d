"""crc32c takes tensors, arrays, bytes-likes and raw pointers; bad input is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiermem.checksum import crc32c, crc32c_raw

CHECK = 0xE3069283  # CRC32C of b"123456789"


def test_every_buffer_kind_checksums_its_raw_bytes():
    raw = b"123456789"
    assert crc32c(bytearray(raw)) == CHECK
    assert crc32c(memoryview(raw)) == CHECK
    assert crc32c(np.frombuffer(raw, dtype=np.uint8)) == CHECK
    assert crc32c(torch.frombuffer(bytearray(raw), dtype=torch.uint8)) == CHECK
    floats = torch.randn(1000)
    assert crc32c(floats) == crc32c(floats.numpy().tobytes())
    halves = torch.randn(1001, dtype=torch.bfloat16)
    assert crc32c(halves) == crc32c(halves.view(torch.uint8).numpy().tobytes())
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert crc32c(arr) == crc32c(arr.tobytes())
    assert crc32c(torch.empty(0)) == 0


def test_raw_pointer_matches_the_buffer_form():
    arr = np.frombuffer(b"xx123456789", dtype=np.uint8)
    assert crc32c_raw(arr.ctypes.data + 2, 9) == CHECK
    assert crc32c_raw(arr.ctypes.data + 2, 5, crc32c(b"")) == crc32c(b"12345")
    assert crc32c_raw(arr.ctypes.data + 7, 4, crc32c(b"12345")) == CHECK
    assert crc32c_raw(0, 0, 123) == 123


def test_non_contiguous_and_unknown_inputs_are_refused():
    with pytest.raises(ValueError, match="contiguous"):
        crc32c(torch.zeros(4, 4).t())
    with pytest.raises(ValueError, match="contiguous"):
        crc32c(np.zeros((4, 4))[:, ::2])
    with pytest.raises(ValueError, match="contiguous"):
        crc32c(memoryview(bytearray(16))[::2])
    with pytest.raises(TypeError, match="list"):
        crc32c([1, 2, 3])


@pytest.mark.parametrize("value", [-1, 1 << 32, 1.5, "0", True])
def test_bad_start_value_names_the_field(value):
    with pytest.raises(ValueError, match="value"):
        crc32c(b"abc", value)


def test_bad_raw_arguments_name_the_field():
    with pytest.raises(ValueError, match="nbytes"):
        crc32c_raw(1234, -1)
    with pytest.raises(ValueError, match="ptr"):
        crc32c_raw(-5, 4)
    with pytest.raises(ValueError, match="NULL"):
        crc32c_raw(0, 4)
