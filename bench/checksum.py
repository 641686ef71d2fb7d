"""CRC32C benchmark: every native implementation (avx512, sse42, scalar), in GB/s.

Three buffer sizes: 256 KiB and 1 MiB (cache-resident: the kernel's own
speed) and 256 MiB (streamed from DRAM: what a large extent costs). The
implementation is chosen once per process, so each one runs in its own
subprocess with ``TIERMEM_CRC`` forcing it; an implementation this CPU lacks
is reported as skipped. Each figure is the median of several timed passes
after a warm-up. The store needs the checksum to cost under 5 % of the I/O
time, so the table also gives that share at the disk bandwidth passed with
``--disk-gbps``.

Usage::

    .venv/bin/python bench/checksum.py
    .venv/bin/python bench/checksum.py --repeats 9 --disk-gbps 2.8 --json /tmp/crc.json
    .venv/bin/python bench/checksum.py --impls avx512,sse42
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tiermem._native import native
from tiermem.checksum import crc32c_raw, impl_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_info, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZES = {"256KiB": 256 << 10, "1MiB": 1 << 20, "256MiB": 256 << 20}
IMPLS = ("avx512", "sse42", "scalar")


def time_pass(fn, ptr: int, nbytes: int, min_seconds: float) -> float:
    """Seconds per ``fn(ptr, nbytes)``, looping until ``min_seconds`` have passed."""
    passes, start = 0, time.perf_counter()
    while True:
        fn(ptr, nbytes)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / passes


def measure(repeats: int, min_seconds: float) -> list[dict]:
    """Rows for the implementation this process runs, one per buffer size."""
    rng = np.random.default_rng(0)
    name = impl_name()
    rows = []
    for size_name, nbytes in SIZES.items():
        # [Note: 64-byte aligned like the store's buffers, so the figure does
        #  not depend on where numpy happened to place the array.]
        raw = rng.integers(0, 256, size=nbytes + 64, dtype=np.uint8)
        ptr = raw.ctypes.data + (-raw.ctypes.data % 64)
        crc32c_raw(ptr, nbytes)  # warm-up: page faults, caches
        samples = [time_pass(crc32c_raw, ptr, nbytes, min_seconds) for _ in range(repeats)]
        secs = statistics.median(samples)
        rows.append(
            {
                "impl": name,
                "size": size_name,
                "bytes": nbytes,
                "seconds_median": secs,
                "gbps": nbytes / secs / 1e9,
                "gbps_min": nbytes / max(samples) / 1e9,
                "gbps_max": nbytes / min(samples) / 1e9,
            }
        )
        del raw
    return rows


def run_forced(impl: str, repeats: int, min_seconds: float) -> list[dict] | None:
    """Rows measured in a subprocess with TIERMEM_CRC=impl; None if it fell back."""
    env = {**os.environ, "TIERMEM_CRC": impl}
    cmd = [sys.executable, __file__, "--worker", "--repeats", str(repeats)]
    cmd += ["--min-seconds", str(min_seconds)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    return rows if rows and rows[0]["impl"] == impl else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed samples per case (median)")
    ap.add_argument("--min-seconds", type=float, default=0.2, help="length of one sample")
    ap.add_argument("--disk-gbps", type=float, default=2.75, help="disk bandwidth for the share")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma-separated implementations")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "checksum.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.disk_gbps <= 0:
        ap.error(f"--disk-gbps must be > 0, got {args.disk_gbps}")
    impls = [i for i in args.impls.split(",") if i]
    if not impls or any(i not in IMPLS for i in impls):
        ap.error(f"--impls must name some of {','.join(IMPLS)}, got {args.impls!r}")
    native.lib  # noqa: B018  fail here, with the rebuild hint, if the library is missing
    if args.worker:
        print(json.dumps(measure(args.repeats, args.min_seconds)))
        return 0

    rows, skipped = [], []
    for impl in impls:
        got = run_forced(impl, args.repeats, args.min_seconds)
        if got is None:
            skipped.append(impl)
            continue
        for row in got:
            row["share_of_io_time"] = args.disk_gbps / row["gbps"]
        rows += got

    print(f"CRC32C, default implementation: {impl_name()} (disk {args.disk_gbps} GB/s)")
    if skipped:
        print(f"not supported here (fell back): {', '.join(skipped)}")
    print(f"{'impl':>8} {'size':>8} {'GB/s':>8} {'min':>8} {'max':>8} {'% of I/O':>9}")
    for r in rows:
        print(
            f"{r['impl']:>8} {r['size']:>8} {r['gbps']:8.2f} {r['gbps_min']:8.2f} "
            f"{r['gbps_max']:8.2f} {100 * r['share_of_io_time']:8.1f}%"
        )
    result = {
        "benchmark": "crc32c",
        "default_impl": impl_name(),
        "disk_gbps": args.disk_gbps,
        "repeats": args.repeats,
        "skipped": skipped,
        "machine": {**machine_info(), "cpu": platform.processor() or platform.machine()},
        "rows": rows,
    }
    write_results(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
