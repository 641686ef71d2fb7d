"""TIERMEM_SIMD picks the kernel set for the process; AUTO picks the best one."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

from tiermem import adam

# [Note: the probe uses the C API through cffi, not torch, so that each fresh
#  interpreter starts in a fraction of a second.]
PROBE = """
import hashlib, random
from tiermem._native import native
ffi, lib = native.ffi, native.lib
n = 1000
rng = random.Random(0)
p, m, v, g = (ffi.new("float[]", [rng.gauss(0, 1) for _ in range(n)]) for _ in range(4))
for i in range(n):
    v[i] = abs(v[i])
cfg = ffi.new("tm_adam_config *")
lib.tm_adam_config_default(cfg)  # simd AUTO: the process-wide choice
cfg.step, cfg.weight_decay = 2, 0.1
assert lib.tm_adam_step(cfg, n, p, m, v, g, 0, ffi.NULL, -1, ffi.NULL) == 0
print(ffi.string(lib.tm_simd_name(lib.tm_simd_active())).decode())
print(ffi.string(lib.tm_simd_reason()).decode())
print(hashlib.sha256(b"".join(bytes(ffi.buffer(x)) for x in (p, m, v))).hexdigest())
"""


@functools.cache
def probe(value: str | None) -> tuple[str, ...]:
    env = dict(os.environ)
    env.pop("TIERMEM_SIMD", None)
    if value is not None:
        env["TIERMEM_SIMD"] = value
    res = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    return tuple(res.stdout.splitlines())


def best() -> str:
    return next(isa for isa in ("avx512", "avx2", "scalar") if adam.simd_supported(isa))


@pytest.mark.parametrize(
    "isa",
    [
        pytest.param(i, marks=pytest.mark.skipif(not adam.simd_supported(i), reason=f"no {i}"))
        for i in ("scalar", "avx2", "avx512")
    ],
)
def test_env_forces_the_kernel_set(isa):
    name, reason, checksum = probe(isa)
    assert name == isa
    assert "TIERMEM_SIMD" in reason
    # the forced set computes the same bits as the scalar oracle
    assert checksum == probe("scalar")[2]


def test_unset_and_bad_values_choose_the_best_supported():
    assert probe(None)[0] == best()
    name, reason, _ = probe("sse9")
    assert name == best()
    assert "sse9" in reason
