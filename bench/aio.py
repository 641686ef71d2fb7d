"""Sequential file I/O: tiermem against fio, DeepSpeed's async I/O, pyuring and
plain Python, on one file, taking turns round after round.

Every tool moves the same file (default 1 GiB) with the same block size
(default 1 MiB) and queue depth (default 32; several may be given), a
sequential write and then a sequential read of the whole file per turn:

- ``tiermem``: ``AioFile`` (io_uring backend, O_DIRECT) with one request
  for the whole file from a ``HostBufferPool`` buffer (mlock'ed);
- ``fio-io_uring``, ``fio-libaio``: fio with ``direct=1``;
- ``deepspeed``: ``AsyncIOBuilder().load().aio_handle(block_size,
  queue_depth, False, True, 1)`` ``sync_pwrite``/``sync_pread`` with its
  locked buffer (built with ``DS_ACCELERATOR=cpu``);
- ``pyuring``: its ring driven from Python, O_DIRECT;
- ``python``: buffered file objects, reads after evicting the file from the
  page cache (posix_fadvise DONTNEED), writes then fsync (queue depth does
  not apply: it runs once per round).

[Note: this virtual disk drifts by +-20% from minute to minute and other jobs
 share the CPU, so tools never run in blocks: each round runs every tool once
 per queue depth, the order rotated from round to round, and the report
 compares medians and the median of per-round ratios (tiermem over the best
 of DeepSpeed and fio in that same round).]

The page cache is kept out of the direct tools' figures by O_DIRECT; the file
is also evicted before every step. Reads into the tiermem, DeepSpeed and
pyuring/python buffers are checked: a word in every 4 KiB is poisoned before
the read and must hold the written pattern after it.

Usage (``bench/setup_peers.sh`` installs the peers once)::

    .venv/bin/python bench/aio.py                                   # 1 GiB, 1 MiB, qd 32, 5 rounds
    .venv/bin/python bench/aio.py --queue-depth 8 16 32 --rounds 7
    .venv/bin/python bench/aio.py --size 256M --tools tiermem,deepspeed,fio-io_uring

Missing peers are reported as skipped, with the reason. The numbers go to
``bench/results/aio.json`` (``--json``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tiermem.aio import AioConfig, AioFile
from tiermem.buffers import HostBufferPool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers_aio import (  # noqa: E402
    DeepSpeedTool,
    DeviceCounters,
    FioTool,
    IoShape,
    PythonTool,
    PyuringTool,
    Tool,
    drop_file_cache,
    huge_page_array,
)
from _results import machine_info, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ALL_TOOLS = (
    "tiermem",
    "tiermem-thp",
    "deepspeed",
    "fio-io_uring",
    "fio-libaio",
    "pyuring",
    "python",
)
REFERENCE_PEERS = ("deepspeed", "fio-io_uring", "fio-libaio")
CHECK_STRIDE_WORDS = 4096 // 8  # one uint64 checked per 4 KiB
POISON = np.uint64(0xDEADBEEFDEADBEEF)


def parse_bytes(text: str) -> int:
    """``1G`` -> 2**30, ``256M`` -> 2**28, ``4096`` -> 4096 (binary units)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size like 1G, 256M or 4096, got {text!r}"
        ) from None


class TiermemTool(Tool):
    """tiermem's AioFile: one request for the whole file, the engine splits it.

    ``huge_pages=False`` reads and writes a ``HostBufferPool`` buffer (the
    ``tiermem`` row); ``True`` a 2 MiB-aligned, MADV_HUGEPAGE, mlock'ed mapping
    of the bench's own (the ``tiermem-thp`` row), to show what the buffer's
    physical layout is worth: see bench/README.md.
    """

    def __init__(self, size: int, backend: str, *, huge_pages: bool = False) -> None:
        self.backend = backend
        self.name = "tiermem-thp" if huge_pages else "tiermem"
        self.buf = self.pool = self.mapping = None
        if huge_pages:
            self.mapping, self.array = huge_page_array(size)
        else:
            self.pool = HostBufferPool(size, lock=True)
            self.buf = self.pool.allocate(size)
            self.array = self.buf.numpy()
        self.reason = ""

    def _run(self, shape: IoShape, write: bool) -> float:
        cfg = AioConfig(
            backend=self.backend,
            direct="on",
            block_size=shape.block_size,
            queue_depth=shape.queue_depth,
        )
        view = self.array[: shape.size]
        t0 = time.perf_counter()
        with AioFile(shape.path, "r+", config=cfg) as f:
            if write:
                f.write(view, 0)
            else:
                f.read_into(view, 0)
            self.reason = f"{f.backend}: {f.reason}"
        return time.perf_counter() - t0

    def write(self, shape: IoShape) -> float:
        return self._run(shape, True)

    def read(self, shape: IoShape) -> float:
        return self._run(shape, False)

    def data_buffer(self) -> np.ndarray:
        return self.array

    def close(self) -> None:
        if self.buf is not None:
            self.buf.release()
            self.pool.trim()
        self.array = self.mapping = None  # unmapped once no view is left


def fill_pattern(buf: np.ndarray) -> None:
    words = buf.view(np.uint64)
    words[:] = np.arange(words.size, dtype=np.uint64)


def poison(buf: np.ndarray) -> None:
    buf.view(np.uint64)[::CHECK_STRIDE_WORDS] = POISON


def check_pattern(buf: np.ndarray, tool: str) -> None:
    sample = buf.view(np.uint64)[::CHECK_STRIDE_WORDS]
    want = np.arange(0, buf.size // 8, CHECK_STRIDE_WORDS, dtype=np.uint64)
    bad = np.flatnonzero(sample != want)
    if bad.size:
        raise RuntimeError(
            f"{tool}: read back wrong data at {bad.size} of {sample.size} checked words, "
            f"first at byte {int(bad[0]) * CHECK_STRIDE_WORDS * 8}"
        )


def tool_versions() -> dict[str, str]:
    out = {}
    fio = shutil.which("fio")
    if fio:
        out["fio"] = subprocess.run(
            [fio, "--version"], capture_output=True, text=True
        ).stdout.strip()
    for mod in ("deepspeed", "pyuring", "torch"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


def build_tools(args: argparse.Namespace, wanted: list[str]) -> tuple[dict[str, Tool], dict]:
    tools: dict[str, Tool] = {}
    skipped: dict[str, str] = {}
    tm = TiermemTool(args.size, args.tiermem_backend)
    fill_pattern(tm.array)
    shared = tm.array  # python and pyuring read/write the same buffer
    makers = {
        "deepspeed": lambda: DeepSpeedTool(args.size),
        "fio-io_uring": lambda: FioTool("io_uring"),
        "fio-libaio": lambda: FioTool("libaio"),
        "tiermem-thp": lambda: TiermemTool(args.size, args.tiermem_backend, huge_pages=True),
        "pyuring": lambda: PyuringTool(shared),
        "python": lambda: PythonTool(shared),
    }
    for name in wanted:
        tool = tm if name == "tiermem" else makers[name]()
        if tool.skip_reason:
            skipped[name] = tool.skip_reason
            print(f"skip {name}: {tool.skip_reason}", flush=True)
            tool.close()
        else:
            tools[name] = tool
    if "tiermem" not in tools:
        tm.close()
    for name in ("deepspeed", "tiermem-thp"):
        if name in tools:
            fill_pattern(tools[name].data_buffer())
    return tools, skipped


def prepare_file(path: Path, size: int) -> None:
    """Create the file at full size with its blocks written (not just reserved):
    overwriting written extents is what every tool measures."""
    pool = HostBufferPool(64 << 20)
    buf = pool.allocate(64 << 20)
    arr = buf.numpy()
    arr[:] = 0xA5
    with AioFile(path, "w+", config=AioConfig(direct="auto")) as f:
        f.allocate(size)
        for off in range(0, size, arr.size):
            f.write(arr[: min(arr.size, size - off)], off)
        f.sync()
    buf.release()


def summarize(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "n": len(values),
    }


def run(args: argparse.Namespace) -> dict:
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(wanted) - set(ALL_TOOLS))
    if unknown:
        raise SystemExit(f"--tools: unknown {unknown}; expected some of {', '.join(ALL_TOOLS)}")
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < args.size + (256 << 20):
        raise SystemExit(f"--dir {directory}: {free} bytes free, need {args.size} + 256 MiB")
    path = directory / f"tiermem-aio-bench-{os.getpid()}.dat"
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    request_kib: dict[str, dict[str, dict[str, list]]] = {}
    tools: dict[str, Tool] = {}
    try:
        print(f"preparing {path} ({args.size} bytes)", flush=True)
        prepare_file(path, args.size)
        tools, skipped = build_tools(args, wanted)
        names = list(tools)
        for qd in args.queue_depth:
            results[str(qd)] = {n: {"write": [], "read": []} for n in names}
            request_kib[str(qd)] = {n: {"write": [], "read": []} for n in names}
        device = DeviceCounters(path)
        for rnd in range(args.rounds):
            order = names[rnd % len(names) :] + names[: rnd % len(names)]
            for qd in args.queue_depth:
                shape = IoShape(
                    path=path, size=args.size, block_size=args.block_size, queue_depth=qd
                )
                line = []
                for name in order:
                    tool = tools[name]
                    if not tool.qd_sensitive and qd != args.queue_depth[0]:
                        continue
                    drop_file_cache(path)
                    c0 = device.sample()
                    w = args.size / tool.write(shape) / 1e9
                    c1 = device.sample()
                    drop_file_cache(path)
                    buf = tool.data_buffer()
                    if buf is not None:
                        poison(buf[: args.size])
                    c2 = device.sample()
                    r = args.size / tool.read(shape) / 1e9
                    c3 = device.sample()
                    if buf is not None:
                        check_pattern(buf[: args.size], name)
                    results[str(qd)][name]["write"].append(w)
                    results[str(qd)][name]["read"].append(r)
                    kib_w = DeviceCounters.mean_request_kib(c0, c1, write=True)
                    kib_r = DeviceCounters.mean_request_kib(c2, c3, write=False)
                    request_kib[str(qd)][name]["write"].append(kib_w)
                    request_kib[str(qd)][name]["read"].append(kib_r)
                    line.append(f"{name} w{w:.2f}/r{r:.2f} ({kib_w}/{kib_r} KiB)")
                print(f"round {rnd + 1}/{args.rounds} qd{qd}: " + "  ".join(line), flush=True)
    finally:
        for tool in tools.values():
            tool.close()
        path.unlink(missing_ok=True)
    out = report(args, results, skipped, tools)
    out["device_request_kib"] = request_kib
    return out


def ratio_to_peers(per_tool: dict, variant: str, peers: list[str], op: str) -> dict:
    """``variant`` over the best peer: the ratio of medians, and the median and
    range of the per-round ratios (each round against that round's best peer)."""
    mine = per_tool[variant][op]
    best_median = max(statistics.median(per_tool[p][op]) for p in peers)
    paired = [mine[i] / max(per_tool[p][op][i] for p in peers) for i in range(len(mine))]
    return {
        "of_medians": round(statistics.median(mine) / best_median, 3),
        "paired_median": round(statistics.median(paired), 3),
        "paired_min": round(min(paired), 3),
        "paired_max": round(max(paired), 3),
        "best_peer": max(peers, key=lambda p: statistics.median(per_tool[p][op])),
    }


def report(args, results, skipped, tools) -> dict:
    summary: dict = {}
    for qd, per_tool in results.items():
        summary[qd] = {"tools": {}, "ratios": {}}
        print(
            f"\n== {args.size / 2**30:g} GiB, block {args.block_size // 1024} KiB, qd {qd}: "
            f"GB/s median (min-max) over {args.rounds} rounds"
        )
        print(f"{'tool':<14} {'write':>22} {'read':>22}")
        for name, ops in per_tool.items():
            row = {op: summarize(v) for op, v in ops.items() if v}
            if not row:
                continue
            summary[qd]["tools"][name] = row
            cells = [
                f"{row[op]['median']:.3f} ({row[op]['min']:.2f}-{row[op]['max']:.2f})"
                for op in ("write", "read")
            ]
            print(f"{name:<14} {cells[0]:>22} {cells[1]:>22}")
        peers = [p for p in REFERENCE_PEERS if p in per_tool and per_tool[p]["read"]]
        for variant in ("tiermem", "tiermem-thp"):
            if variant not in per_tool or not peers:
                continue
            for op in ("write", "read"):
                ratio = ratio_to_peers(per_tool, variant, peers, op)
                summary[qd]["ratios"].setdefault(variant, {})[op] = ratio
                print(
                    f"{variant}/best-of({','.join(peers)}) {op}: {ratio['of_medians']:.3f} "
                    f"(ratio of medians; best {ratio['best_peer']}), per-round "
                    f"{ratio['paired_median']:.3f} "
                    f"[{ratio['paired_min']:.2f}-{ratio['paired_max']:.2f}]"
                )
    out = {
        "schema": "tiermem.bench-aio/1",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "size": args.size,
        "block_size": args.block_size,
        "queue_depths": args.queue_depth,
        "rounds": args.rounds,
        "directory": str(Path(args.dir).resolve()),
        "tiermem": getattr(tools.get("tiermem"), "reason", ""),
        "skipped": skipped,
        "machine": {
            **machine_info(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "versions": tool_versions(),
        },
        "gbps": {qd: {n: ops for n, ops in per.items()} for qd, per in results.items()},
        "summary": summary,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=str(REPO / "scratch"), help="directory for the test file")
    ap.add_argument("--size", type=parse_bytes, default=1 << 30, help="file size (default 1G)")
    ap.add_argument("--block-size", type=parse_bytes, default=1 << 20, help="default 1M")
    ap.add_argument(
        "--queue-depth", type=int, nargs="+", default=[32], help="one or more (default 32)"
    )
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tools", default=",".join(ALL_TOOLS), help="comma-separated subset")
    ap.add_argument(
        "--tiermem-backend", default="io_uring", choices=("io_uring", "libaio", "threads")
    )
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "aio.json"))
    args = ap.parse_args(argv)
    if args.size <= 0 or args.size % 4096:
        ap.error(f"--size: expected a positive multiple of 4096, got {args.size}")
    if args.block_size <= 0 or args.block_size % 4096:
        ap.error(f"--block-size: expected a positive multiple of 4096, got {args.block_size}")
    if any(q < 1 or q > 4096 for q in args.queue_depth):
        ap.error(f"--queue-depth: expected integers in 1..4096, got {args.queue_depth}")
    if args.rounds < 1:
        ap.error(f"--rounds: expected >= 1, got {args.rounds}")
    result = run(args)
    print()
    write_results(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
