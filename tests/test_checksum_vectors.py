"""CRC32C matches the published check values, on every native implementation."""

from __future__ import annotations

import pytest
from crc_helpers import IMPLS, expected_name, random_bytes, run_forced, supported

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


# Each vector at misalignments 0..63; then random buffers long enough for the
# folding kernel, against the pure-Python oracle rather than the library.
FORCED_BODY = """
result = []
for hexdata in params["vectors"]:
    data = np.frombuffer(bytes.fromhex(hexdata), dtype=np.uint8)
    padded = [aligned(np.concatenate([np.zeros(s, np.uint8), data])) for s in range(64)]
    result.append([crc(buf, s, data.size) for s, buf in enumerate(padded)])
long = aligned(random_bytes(params["seed"], params["size"]))
result.append([crc(long, off, n) for off, n in params["long"]])
"""
LONG_SEED, LONG_SIZE = 8, 6000
LONG = ((0, 320), (13, 1024), (63, 4099), (1, 5999))


@pytest.mark.parametrize("impl", IMPLS)
def test_known_vectors_and_bitwise_oracle_on_every_forced_implementation(impl):
    name, result = run_forced(
        impl,
        FORCED_BODY,
        vectors=[data.hex() for data, _ in VECTORS],
        seed=LONG_SEED,
        size=LONG_SIZE,
        long=LONG,
    )
    assert name == expected_name(impl)
    if supported(impl):
        assert name == impl
    *per_vector, long = result
    for (data, expected), crcs in zip(VECTORS, per_vector, strict=True):
        assert crcs == [expected] * 64, data
    data = random_bytes(LONG_SEED, LONG_SIZE).tobytes()
    assert long == [crc32c_bitwise(data[off : off + n]) for off, n in LONG]
