"""CRC32C matches the published check values, on both native implementations."""

from __future__ import annotations

import pytest

from tiermem.checksum import crc32c, crc32c_scalar

POLY = 0x82F63B78


def crc32c_bitwise(data: bytes, value: int = 0) -> int:
    """The textbook bit-at-a-time reflected CRC32C, independent of the library."""
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (POLY & -(crc & 1))
    return crc ^ 0xFFFFFFFF


# The Castagnoli check value and the iSCSI test vectors (RFC 3720, B.4).
VECTORS = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("fn", [crc32c, crc32c_scalar, crc32c_bitwise], ids=lambda f: f.__name__)
@pytest.mark.parametrize("data,expected", VECTORS, ids=[f"v{i}" for i in range(len(VECTORS))])
def test_known_vectors(fn, data, expected):
    assert fn(data) == expected
