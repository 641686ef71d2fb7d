"""CRC32C benchmark: the fast (SSE4.2) and scalar implementations, in GB/s.

Two buffer sizes: 1 MiB (cache-resident: the kernel's own speed) and 256 MiB
(streamed from DRAM: what a large extent costs). Each figure is the median of
several timed passes after a warm-up. The store needs the checksum to cost
under 5 % of the I/O time, so the table also gives that share at the disk
bandwidth passed with ``--disk-gbps``.

Usage::

    .venv/bin/python bench/checksum.py
    .venv/bin/python bench/checksum.py --repeats 9 --disk-gbps 2.8 --json /tmp/crc.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from tiermem._native import native
from tiermem.checksum import crc32c_raw, impl_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_info, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZES = {"1MiB": 1 << 20, "256MiB": 256 << 20}


def time_pass(fn, ptr: int, nbytes: int, min_seconds: float) -> float:
    """Seconds per pass over the buffer, looping until ``min_seconds`` have passed."""
    passes, start = 0, time.perf_counter()
    while True:
        fn(0, ptr, nbytes)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return elapsed / passes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed samples per case (median)")
    ap.add_argument("--min-seconds", type=float, default=0.2, help="length of one sample")
    ap.add_argument("--disk-gbps", type=float, default=2.75, help="disk bandwidth for the share")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "checksum.json"))
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.disk_gbps <= 0:
        ap.error(f"--disk-gbps must be > 0, got {args.disk_gbps}")

    ffi, lib = native.ffi, native.lib
    impls = {
        impl_name(): lambda crc, ptr, n: crc32c_raw(ptr, n, crc),
        "scalar": lambda crc, ptr, n: lib.tm_crc32c_scalar(crc, ffi.cast("void *", ptr), n),
    }
    rng = np.random.default_rng(0)
    rows = []
    for size_name, nbytes in SIZES.items():
        buf = rng.integers(0, 256, size=nbytes, dtype=np.uint8)
        ptr = buf.ctypes.data
        for name, fn in impls.items():
            fn(0, ptr, nbytes)  # warm-up: page faults, caches
            samples = [time_pass(fn, ptr, nbytes, args.min_seconds) for _ in range(args.repeats)]
            secs = statistics.median(samples)
            gbps = nbytes / secs / 1e9
            rows.append(
                {
                    "impl": name,
                    "size": size_name,
                    "bytes": nbytes,
                    "seconds_median": secs,
                    "gbps": gbps,
                    "gbps_min": nbytes / max(samples) / 1e9,
                    "gbps_max": nbytes / min(samples) / 1e9,
                    "share_of_io_time": args.disk_gbps / gbps,
                }
            )
        del buf

    print(f"CRC32C, default implementation: {impl_name()} (disk {args.disk_gbps} GB/s)")
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
        "machine": {**machine_info(), "cpu": platform.processor() or platform.machine()},
        "rows": rows,
    }
    write_results(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
