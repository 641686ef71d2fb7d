"""Tiered store streaming benchmark: NVMe -> host through TensorStore, in
schedule order, against tiermem's own disk benchmark on the same directory.

A set of tensors several times the host budget (default 1 GiB of 32 MiB fp32
tensors through a 256 MiB host tier) is registered (written to NVMe), then
streamed: every pass fetches each tensor into the host tier, consumes it (a
sum over it) and releases it. The first pass records the schedule; the
measured passes replay it with prefetch. Reported, each from the same run:

- ``read_gbps``: bytes the store read from NVMe / wall time of the measured
  passes, and its ratio to the best sequential read GB/s of
  ``tiermem.diskbench`` (``tiermem bench``) on the same directory
  (target >= 0.9);
- ``delivered_gbps``: bytes handed to the caller / wall time (higher: tensors
  that next-use eviction kept in memory need no read);
- ``stall_fraction``: time the caller waited in ``wait()`` / wall time, with
  and without prefetch;
- the cost of crc32c verification: the same run with ``checksum=False``.

Configurations run interleaved (``--repeats`` rounds) and the median is
reported; on a shared machine the numbers are noisy.

Usage::

    .venv/bin/python bench/store.py                     # defaults, scratch dir under the repo
    .venv/bin/python bench/store.py --dir /nvme/scratch --total 4G --host 1G
    .venv/bin/python bench/store.py --quick             # small sizes, seconds
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from tiermem import diskbench
from tiermem.aio import AioConfig
from tiermem.store import StoreConfig, TensorStore, TierKind

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_info, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MiB, GiB = 1 << 20, 1 << 30


def parse_bytes(text: str) -> int:
    """``256M`` -> 268435456 (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def disk_best_read(directory: Path, size: int, block_size: int, queue_depth: int) -> dict:
    """Best read GB/s of tiermem's disk benchmark on ``directory``."""
    cfg = diskbench.DiskBenchConfig(
        directory=directory,
        size=size,
        block_sizes=sorted({block_size, 4 * MiB}),
        queue_depths=sorted({queue_depth, 16}),
        backends=None,
    )
    result = diskbench.run(cfg)
    reads = [r for r in result["results"] if r["op"] == "read"]
    best = max(reads, key=lambda r: r["gbps"])
    return {
        "best_read_gbps": best["gbps"],
        "best_read_config": {k: best[k] for k in ("backend", "block_size", "queue_depth")},
        "filesystem": result["filesystem"],
        "o_direct": result["o_direct"],
        "rows": result["results"],
    }


def stream(args, directory: Path, *, prefetch: bool, checksum: bool) -> dict:
    """Register the tensors, record one pass, time ``args.passes`` replayed passes."""
    numel = args.tensor // 4
    count = args.total // args.tensor
    cfg = StoreConfig(
        host_bytes=args.host,
        nvme_paths=tuple(directory / f"stripe{i}" for i in range(args.stripes)),
        prefetch_bytes=args.prefetch if prefetch else 0,
        checksum=checksum,
        aio=AioConfig(block_size=args.block_size, queue_depth=args.queue_depth),
    )
    gen = torch.Generator().manual_seed(0)
    chunk = torch.randn(numel, generator=gen)
    names = [f"t{i:04d}" for i in range(count)]
    with TensorStore(cfg) as store:
        for i, name in enumerate(names):
            chunk[0] = float(i)  # each tensor differs
            store.register(name, numel, torch.float32, init=chunk)
        sums = []

        def one_pass() -> None:
            store.begin_pass()
            for name in names:
                t = store.fetch(name, TierKind.HOST).wait()
                for _ in range(args.reductions):  # the consumer
                    sums.append(float(t.sum()))
                store.release(name)
            store.end_pass()

        one_pass()  # records the schedule
        store.telemetry.reset()
        pass_seconds = []
        t0 = time.perf_counter()
        for _ in range(args.passes):
            p0 = time.perf_counter()
            one_pass()
            pass_seconds.append(time.perf_counter() - p0)
        wall = time.perf_counter() - t0
        snap = store.telemetry.snapshot()
        if args.trace:
            store.telemetry.write_chrome_trace(args.trace)
    read = snap["bytes_moved"].get("nvme->host", 0)
    delivered = args.passes * count * args.tensor
    return {
        "prefetch_bytes": cfg.prefetch_bytes,
        "checksum": checksum,
        "wall_seconds": round(wall, 4),
        "pass_seconds": [round(s, 4) for s in pass_seconds],
        "read_bytes": read,
        "read_gbps": round(read / wall / 1e9, 4),
        "delivered_gbps": round(delivered / wall / 1e9, 4),
        "stall_seconds": round(snap["stall_seconds"], 4),
        "stall_fraction": round(snap["stall_seconds"] / wall, 4),
        "checksum_seconds": round(snap["checksum_seconds"], 4),
        "prefetch_hits": snap["prefetch_hits"],
        "prefetch_misses": snap["prefetch_misses"],
        "cache_hits": snap["cache_hits"],
        "evictions_host": snap["evictions"]["host"],
        "host_peak_bytes": snap["tiers"]["host"]["peak"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=str(REPO / "scratch" / "bench-store"))
    ap.add_argument("--total", default="1G", help="bytes of tensors (>= 4 x --host)")
    ap.add_argument("--host", default="256M", help="host tier budget")
    ap.add_argument("--tensor", default="32M", help="bytes per tensor")
    ap.add_argument("--prefetch", default="64M", help="prefetch window (>= 2 x qd x block)")
    ap.add_argument("--block-size", default="1M")
    ap.add_argument("--queue-depth", type=int, default=32)
    ap.add_argument("--stripes", type=int, default=1, help="swap files in --dir (same disk)")
    ap.add_argument("--passes", type=int, default=3, help="measured passes per run")
    ap.add_argument("--repeats", type=int, default=2, help="runs per configuration (median)")
    ap.add_argument(
        "--reductions",
        type=int,
        default=1,
        help="sums over each tensor (more: heavier compute to overlap with I/O)",
    )
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads for the consumer's reduction"
    )
    ap.add_argument("--quick", action="store_true", help="256M total, 64M host, 8M tensors")
    ap.add_argument("--trace", default=None, help="Chrome trace of the last run")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "store.json"))
    args = ap.parse_args()
    if args.quick:
        args.total, args.host, args.tensor, args.prefetch = "256M", "64M", "8M", "64M"
    for key in ("total", "host", "tensor", "prefetch", "block_size"):
        setattr(args, key, parse_bytes(getattr(args, key)))
    if args.total < 4 * args.host:
        print(f"--total must be >= 4 x --host ({args.total} < 4 x {args.host})", file=sys.stderr)
        return 2
    # [Note: the consumer runs with one torch thread by default: on a small
    #  machine a multi-threaded reduction competes with the I/O engine threads
    #  (measured 10x slower on a busy 2-core VM), and then the benchmark
    #  measures torch's thread pool instead of the store.]
    torch.set_num_threads(args.threads)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    run_dir = directory / f"run-{int(time.time())}"
    try:
        disk = disk_best_read(directory, args.total, args.block_size, args.queue_depth)
        print(
            f"disk ({disk['filesystem']}, O_DIRECT {disk['o_direct']}): best read "
            f"{disk['best_read_gbps']:.2f} GB/s {disk['best_read_config']}"
        )
        configs = {
            "prefetch+checksum": dict(prefetch=True, checksum=True),
            "prefetch, no checksum": dict(prefetch=True, checksum=False),
            "no prefetch": dict(prefetch=False, checksum=True),
        }
        runs: dict[str, list[dict]] = {k: [] for k in configs}
        for rep in range(args.repeats):
            for key, kw in configs.items():  # interleaved, so drift hits all alike
                r = stream(args, run_dir / f"{rep}-{len(runs[key])}", **kw)
                runs[key].append(r)
                print(
                    f"  {key:<22} read {r['read_gbps']:.2f} GB/s, delivered "
                    f"{r['delivered_gbps']:.2f} GB/s, stall {100 * r['stall_fraction']:.1f}%"
                )
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

    def med(key: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[key])

    best = disk["best_read_gbps"]
    read = med("prefetch+checksum", "read_gbps")
    read_nocrc = med("prefetch, no checksum", "read_gbps")
    summary = {
        "disk_best_read_gbps": best,
        "store_read_gbps": read,
        "ratio_to_disk": round(read / best, 3),
        "target_ratio": 0.9,
        "delivered_gbps": med("prefetch+checksum", "delivered_gbps"),
        "stall_fraction_prefetch": med("prefetch+checksum", "stall_fraction"),
        "stall_fraction_no_prefetch": med("no prefetch", "stall_fraction"),
        "read_gbps_no_prefetch": med("no prefetch", "read_gbps"),
        "read_gbps_no_checksum": read_nocrc,
        "checksum_cost_fraction": round(1 - read / read_nocrc, 4) if read_nocrc else None,
    }
    print(
        f"store read {read:.2f} GB/s = {summary['ratio_to_disk']:.2f} x disk best "
        f"{best:.2f} GB/s (target >= 0.9); stall {100 * summary['stall_fraction_prefetch']:.1f}% "
        f"with prefetch, {100 * summary['stall_fraction_no_prefetch']:.1f}% without; "
        f"checksum costs {100 * (summary['checksum_cost_fraction'] or 0):.1f}% of throughput"
    )
    result = {
        "schema": "tiermem.bench.store/1",
        "machine": machine_info(),
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "disk": disk,
        "runs": runs,
        "summary": summary,
    }
    write_results(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
