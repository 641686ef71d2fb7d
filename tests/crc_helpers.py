"""Run CRC32C code in a fresh interpreter with TIERMEM_CRC forcing an implementation.

The implementation is chosen once per process, so each one is tested in a
subprocess: :func:`run_forced` runs a snippet there and returns the name of
the implementation that ran and the snippet's JSON ``result``. The parent
compares the result with the scalar oracle (or published check values), so
a wrong kernel fails the test in the parent.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# Most capable first; "scalar" runs everywhere.
IMPLS = ("avx512", "sse42", "scalar")
# The CPU flags (as /proc/cpuinfo names them) each implementation needs.
NEEDS = {
    "avx512": {"avx512f", "avx512bw", "avx512vl", "vpclmulqdq", "sse4_2", "pclmulqdq"},
    "sse42": {"sse4_2", "pclmulqdq"},
    "scalar": set(),
}

# [Note: the preamble uses the C API through cffi, not torch, so each fresh
#  interpreter starts quickly. crc(buf, off, n, value) is tm_crc32c over
#  n bytes at byte offset off of a uint8 array; aligned(data) copies data to
#  the start of a 64-byte aligned array, so off is the misalignment too;
#  random_bytes is this module's, so both sides see the same bytes.]
PREAMBLE = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from crc_helpers import random_bytes
from tiermem._native import native
ffi, lib = native.ffi, native.lib
params = json.loads(sys.argv[1])

def crc(buf, off, n, value=0):
    return int(lib.tm_crc32c(value, ffi.cast("const void *", buf.ctypes.data + off), n))

def aligned(data):
    raw = np.zeros(data.size + 64, dtype=np.uint8)
    start = -raw.ctypes.data % 64
    out = raw[start : start + data.size]
    out[:] = data
    return out

"""
EPILOGUE = """
print(json.dumps({"impl": ffi.string(lib.tm_crc32c_impl()).decode(), "result": result}))
"""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    path = Path("/proc/cpuinfo")
    if not path.exists():
        return frozenset()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def supported(impl: str) -> bool:
    """Whether this CPU has what ``impl`` needs."""
    return NEEDS[impl] <= cpu_flags()


def best() -> str:
    """The implementation an unset or unknown TIERMEM_CRC must choose."""
    return next(impl for impl in IMPLS if supported(impl))


def expected_name(value: str | None) -> str:
    """What tm_crc32c_impl() must say with TIERMEM_CRC=value: it, else the best."""
    return value if value in NEEDS and supported(value) else best()


def run_forced(value: str | None, body: str, **params) -> tuple[str, object]:
    """Run ``body`` (which sets ``result``) with TIERMEM_CRC=value (None: unset).

    Returns (implementation name, result); ``params`` reach the snippet as
    the ``params`` dict, through JSON.
    """
    env = dict(os.environ)
    env.pop("TIERMEM_CRC", None)
    if value is not None:
        env["TIERMEM_CRC"] = value
    code = PREAMBLE + body + EPILOGUE
    res = subprocess.run(
        [sys.executable, "-c", code, json.dumps(params)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, (res.returncode, res.stderr)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return out["impl"], out["result"]


def random_bytes(seed: int, size: int) -> np.ndarray:
    """Deterministic random bytes, the same in the parent and the subprocess."""
    return np.random.default_rng(seed).integers(0, 256, size=size, dtype=np.uint8)
