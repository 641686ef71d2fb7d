"""The fast CRC32C equals the scalar one and a pure-Python oracle on random data.

Lengths cover every path of the fast kernel: byte steps to alignment, the
8-byte tail, short (3 x 256 B) and long (3 x 8 KiB) interleaved blocks, and
buffers of several MiB; starts are misaligned by 0..15 bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tiermem.checksum import crc32c, crc32c_raw, crc32c_scalar, impl_name

POLY = 0x82F63B78


def crc32c_bitwise(data: bytes, value: int = 0) -> int:
    """The textbook bit-at-a-time reflected CRC32C, independent of the library."""
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (POLY & -(crc & 1))
    return crc ^ 0xFFFFFFFF


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(1234).integers(0, 256, size=(9 << 20) + 64, dtype=np.uint8)


def test_every_small_length_and_offset_matches_the_bitwise_oracle(data):
    rng = np.random.default_rng(7)
    for length in range(0, 130):
        offset = int(rng.integers(0, 16))
        piece = data[offset : offset + length]
        expected = crc32c_bitwise(piece.tobytes())
        assert crc32c(piece) == expected, (offset, length)
        assert crc32c_scalar(piece) == expected, (offset, length)


def test_lengths_up_to_a_few_kib_match_scalar(data):
    lengths = list(range(0, 3 * 256 * 3 + 40)) + list(range(49140, 49170)) + [4096, 24575, 24576]
    lengths += [int(n) for n in np.random.default_rng(3).integers(0, 100_000, size=200)]
    for i, length in enumerate(lengths):
        offset = i % 16
        piece = data[offset : offset + length]
        assert crc32c(piece) == crc32c_scalar(piece), (offset, length)


def test_some_kib_lengths_match_the_bitwise_oracle(data):
    # Past the short-block threshold (768 B) and the long one (24 KiB), where
    # the three streams are combined with carry-less multiplies.
    for offset, length in [(3, 769), (0, 2304 + 13), (5, 24576 + 8 * 3 + 1)]:
        piece = data[offset : offset + length]
        assert crc32c(piece) == crc32c_bitwise(piece.tobytes())


@pytest.mark.parametrize("offset", [0, 1, 7, 13])
def test_multi_mib_buffers_match_scalar(data, offset):
    length = (8 << 20) + 1000 * offset + offset
    piece = data[offset : offset + length]
    assert crc32c(piece) == crc32c_scalar(piece)
    assert crc32c_raw(piece.ctypes.data, piece.nbytes) == crc32c_scalar(piece)


def test_the_fast_implementation_runs_where_the_cpu_has_it():
    # On x86-64 with SSE4.2 + PCLMUL (this machine) the default must not fall back.
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if " sse4_2" in cpu_flags and " pclmulqdq" in cpu_flags:
        assert impl_name() == "sse42"
    else:
        assert impl_name() == "scalar"
