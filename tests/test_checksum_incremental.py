"""Feeding pieces in order gives the CRC32C of their concatenation."""

from __future__ import annotations

import numpy as np

from tiermem.checksum import crc32c, crc32c_scalar


def test_two_pieces_at_every_cut_of_a_small_buffer():
    data = np.random.default_rng(5).integers(0, 256, size=1500, dtype=np.uint8)
    whole = crc32c(data)
    for cut in range(0, len(data) + 1, 7):
        assert crc32c(data[cut:], crc32c(data[:cut])) == whole, cut
        assert crc32c_scalar(data[cut:], crc32c_scalar(data[:cut])) == whole, cut


def test_many_random_pieces_of_a_large_buffer():
    rng = np.random.default_rng(11)
    data = rng.integers(0, 256, size=3 << 20, dtype=np.uint8)
    whole = crc32c(data)
    assert whole == crc32c_scalar(data)
    for _ in range(5):
        cuts = np.sort(rng.integers(0, len(data), size=int(rng.integers(1, 40))))
        crc, start = 0, 0
        for cut in [*cuts.tolist(), len(data)]:
            crc = crc32c(data[start:cut], crc)
            start = cut
        assert crc == whole


def test_mixing_implementations_between_pieces():
    data = np.random.default_rng(2).integers(0, 256, size=100_003, dtype=np.uint8)
    assert crc32c_scalar(data[40_000:], crc32c(data[:40_000])) == crc32c(data)
    assert crc32c(data[33:], crc32c_scalar(data[:33])) == crc32c(data)


def test_empty_piece_leaves_the_value_unchanged():
    assert crc32c(b"", 0xDEADBEEF) == 0xDEADBEEF
    assert crc32c_scalar(b"", 0x12345678) == 0x12345678
