"""TIERMEM_CRC forces the CRC32C implementation for the process; both agree."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from tiermem.checksum import crc32c_scalar

# [Note: the probe uses the C API through cffi, not torch, so each fresh
#  interpreter starts quickly. It prints the implementation, then the CRC of
#  slices at several offsets and lengths that reach every kernel path.]
PROBE = """
from tiermem._native import native
ffi, lib = native.ffi, native.lib
data = bytes((i * 2654435761 >> 13) & 0xFF for i in range(300_000))
buf = ffi.from_buffer(data)
print(ffi.string(lib.tm_crc32c_impl()).decode())
for off, n in ((0, 0), (1, 9), (3, 800), (5, 24_600), (7, 299_000)):
    print(lib.tm_crc32c(0, buf + off, n))
"""
DATA = bytes((i * 2654435761 >> 13) & 0xFF for i in range(300_000))
SLICES = ((0, 0), (1, 9), (3, 800), (5, 24_600), (7, 299_000))


def has_sse42() -> bool:
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    return " sse4_2" in flags and " pclmulqdq" in flags


@functools.cache
def probe(value: str | None) -> tuple[str, ...]:
    env = dict(os.environ)
    env.pop("TIERMEM_CRC", None)
    if value is not None:
        env["TIERMEM_CRC"] = value
    res = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return tuple(res.stdout.split())


def expected_crcs() -> list[str]:
    return [str(crc32c_scalar(DATA[off : off + n])) for off, n in SLICES]


@pytest.mark.parametrize(
    "impl",
    [
        "scalar",
        pytest.param("sse42", marks=pytest.mark.skipif(not has_sse42(), reason="no SSE4.2")),
    ],
)
def test_env_forces_the_implementation_and_it_is_correct(impl):
    name, *crcs = probe(impl)
    assert name == impl
    assert crcs == expected_crcs()


def test_unset_and_unknown_values_choose_the_best_supported():
    best = "sse42" if has_sse42() else "scalar"
    assert probe(None)[0] == best
    name, *crcs = probe("crc9000")
    assert name == best
    assert crcs == expected_crcs()
