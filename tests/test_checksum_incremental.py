"""Feeding pieces in order gives the CRC32C of their concatenation."""

from __future__ import annotations

import numpy as np
import pytest
from crc_helpers import IMPLS, expected_name, random_bytes, run_forced, supported

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


CHAIN_SEED, CHAIN_SIZE = 31, 300_003
CHAIN_BODY = """
data = aligned(random_bytes(params["seed"], params["size"]))
chains = []
for cuts in params["cut_lists"]:
    value, start = 0, 0
    for cut in cuts + [data.size]:
        value = crc(data, start, cut - start, value)
        start = cut
    chains.append(value)
pairs = [crc(data, cut, params["small"] - cut, crc(data, 0, cut)) for cut in params["small_cuts"]]
result = [chains, pairs]
"""


def cut_lists() -> list[list[int]]:
    """Random cuts, plus pieces whose lengths straddle every kernel threshold."""
    rng = np.random.default_rng(13)
    lists = [
        sorted(rng.integers(0, CHAIN_SIZE, size=int(rng.integers(1, 40))).tolist())
        for _ in range(6)
    ]
    edges, pos = [], 0
    for n in [1, 63, 64, 255, 256, 319, 320, 321, 511, 512, 767, 768, 4097, 24_577, 65_539] * 3:
        pos += n
        edges.append(pos)
    return [*lists, edges]


@pytest.mark.parametrize("impl", IMPLS)
def test_forced_implementation_chains_to_the_crc_of_the_whole(impl):
    small, small_cuts = 4000, list(range(0, 4001, 37))
    name, (chains, pairs) = run_forced(
        impl,
        CHAIN_BODY,
        seed=CHAIN_SEED,
        size=CHAIN_SIZE,
        cut_lists=cut_lists(),
        small=small,
        small_cuts=small_cuts,
    )
    assert name == expected_name(impl)
    if supported(impl):
        assert name == impl
    data = random_bytes(CHAIN_SEED, CHAIN_SIZE)
    assert chains == [crc32c_scalar(data)] * len(cut_lists())
    assert pairs == [crc32c_scalar(data[:small])] * len(small_cuts)
