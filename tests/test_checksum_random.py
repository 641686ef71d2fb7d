"""The fast CRC32C equals the scalar one and a pure-Python oracle on random data.

Lengths cover every path of the fast kernels: for SSE4.2 byte steps to
alignment, the 8-byte tail, short (3 x 256 B) and long (3 x 8 KiB)
interleaved blocks; for AVX-512 the hand-over to SSE4.2 below 320 B, the
aligned head, 256-byte folding blocks, 64-byte tail blocks and the byte
tail; and buffers of several MiB. The in-process tests use the default
implementation; each implementation is also forced in a subprocess and
checked on lengths 0..100000 at misalignments 0..63.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from crc_helpers import IMPLS, best, expected_name, random_bytes, run_forced, supported

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
    # On x86-64 with AVX-512 + VPCLMULQDQ (this machine) the default must not
    # fall back; without it, SSE4.2 + PCLMUL; else the table.
    assert impl_name() == best()


FORCED_SEED, FORCED_SIZE = 21, (8 << 20) + 65_536
FORCED_BODY = """
data = aligned(random_bytes(params["seed"], params["size"]))
result = [crc(data, off, n, value) for off, n, value in params["cases"]]
"""


@functools.cache
def forced_cases() -> tuple[tuple[int, int, int], ...]:
    """(offset, length, starting value): every length to 700 B, random ones to 100000."""
    rng = np.random.default_rng(99)
    cases = [(n % 64, n, 0) for n in range(700)]
    cases += [
        (int(rng.integers(0, 64)), int(rng.integers(0, 100_001)), int(rng.integers(0, 1 << 32)))
        for _ in range(300)
    ]
    cases += [(off, (8 << 20) + 1000 * off + off, 0) for off in (0, 1, 31, 63)]
    assert all(off + n <= FORCED_SIZE for off, n, _ in cases)  # the subprocess reads raw memory
    return tuple(cases)


@functools.cache
def forced_expected() -> list[int]:
    data = random_bytes(FORCED_SEED, FORCED_SIZE)
    return [crc32c_scalar(data[off : off + n], value) for off, n, value in forced_cases()]


@pytest.mark.parametrize("impl", IMPLS)
def test_forced_implementation_matches_scalar_on_random_lengths_and_offsets(impl):
    name, got = run_forced(
        impl, FORCED_BODY, seed=FORCED_SEED, size=FORCED_SIZE, cases=forced_cases()
    )
    assert name == expected_name(impl)
    if supported(impl):
        assert name == impl
    want = forced_expected()
    wrong = [case for case, g, w in zip(forced_cases(), got, want, strict=True) if g != w]
    assert not wrong, f"{name}: {len(wrong)} wrong, first (offset, length, value): {wrong[:5]}"
