"""TIERMEM_CRC forces the CRC32C implementation for the process; all agree."""

from __future__ import annotations

import functools

import pytest
from crc_helpers import IMPLS, best, expected_name, random_bytes, run_forced, supported

from tiermem.checksum import crc32c_scalar

# [Note: slices at several offsets and lengths that reach every kernel path:
#  byte steps, the SSE4.2 short and long three-stream blocks, and the AVX-512
#  aligned head, 256-byte folding blocks, 64-byte tail blocks and byte tail.]
SLICES = ((0, 0), (1, 9), (3, 800), (63, 319), (63, 320), (5, 24_600), (7, 299_000))
SEED, SIZE = 17, 300_064
BODY = """
data = aligned(random_bytes(params["seed"], params["size"]))
result = [crc(data, off, n) for off, n in params["slices"]]
"""


@functools.cache
def probe(value: str | None) -> tuple[str, list[int]]:
    return run_forced(value, BODY, seed=SEED, size=SIZE, slices=SLICES)


def expected_crcs() -> list[int]:
    data = random_bytes(SEED, SIZE)
    return [crc32c_scalar(data[off : off + n]) for off, n in SLICES]


@pytest.mark.parametrize("impl", IMPLS)
def test_env_forces_the_implementation_and_it_is_correct(impl):
    name, crcs = probe(impl)
    # A forced implementation runs where the CPU has it (this machine has all
    # three); where it does not, the best supported one runs instead.
    assert name == expected_name(impl)
    if supported(impl):
        assert name == impl
    assert crcs == expected_crcs()


def test_sse42_can_be_forced_where_avx512_is_the_default():
    if supported("avx512"):
        assert probe(None)[0] == "avx512"
        assert probe("sse42")[0] == "sse42"
    else:
        assert probe(None)[0] == best() != "avx512"


def test_unset_and_unknown_values_choose_the_best_supported():
    assert probe(None)[0] == best()
    name, crcs = probe("crc9000")
    assert name == best()
    assert crcs == expected_crcs()
