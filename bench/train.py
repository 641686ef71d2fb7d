"""Training benchmark: tiermem's offload overhead, and tiermem against DeepSpeed ZeRO-3.

On one GPT-style model (``tiermem.train.models.GPT``; default hidden 1024,
4 layers, 16 heads, sequence 128, vocabulary 16384, batch 4, bf16: 67M
parameters) and in one run, each case in a fresh subprocess
(``bench/_train_case.py``):

1. **Offload overhead.** tiermem ZeRO-3 with parameters and optimizer states
   on NVMe against everything in RAM (offload none, the compute-only step).
   Reported: median step time after warm-up, bytes moved per step (the
   store's telemetry, ``engine.placements.stores``), achieved disk bandwidth,
   and ``ratio = step / max(compute-only step, I/O time)`` where the I/O time
   is read bytes / best read GB/s + written bytes / best write GB/s of
   ``tiermem.diskbench`` on the same directory in the same run (a
   ``--quick``-sized sweep). Target: ratio <= 1.15.
2. **Against DeepSpeed** (0.19.8, ``DS_ACCELERATOR=cpu``, gloo, world size 1):
   ZeRO-3 with no offload, optimizer offloaded to host (CPU Adam), and
   parameters + optimizer on NVMe, against tiermem's same placements.
   Targets: tiermem NVMe >= 2x faster than DeepSpeed NVMe; tiermem CPU
   offload >= 1.0x DeepSpeed's. A missing DeepSpeed is reported as skipped.

3. **Tight NVMe case**: the NVMe case with the store's host budget capped at
   ``--tight-fraction`` (0.25) of the training state; ``tight_ratio`` = its
   step / max(compute-only step, its I/O at the disk's best). Every NVMe case
   also reports its bytes per step against ``engine.min_bytes_per_step()``.

``--contend N`` runs N busy processes beside every case. ``--capacity``
(manual, not CI) instead trains a GPT whose training state (~18
bytes/parameter) is >= 2x this machine's RAM for ``--capacity-steps`` (8)
steps with parameters and optimizer on NVMe, built under
``tiermem.init_context``, and reports peak RSS, tier usage and the steady
step against its floor (see bench/README.md).

Usage::

    .venv/bin/python bench/train.py --quick          # tiny model, seconds (smoke test)
    .venv/bin/python bench/train.py                  # the issue's 67M model
    .venv/bin/python bench/train.py --no-deepspeed   # tiermem cases only
    nice -n 10 .venv/bin/python bench/train.py --capacity --json bench/results/train_capacity.json
        # ~15 min here; needs ~2.3x RAM of free disk

Writes ``bench/results/train.json`` (``--json``). Timings on a shared machine
are noisy: the load average at start and end is printed and kept.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _contend import busy_processes  # noqa: E402
from _results import machine_info, write_results  # noqa: E402
from _train_metrics import (  # noqa: E402
    bytes_against_min,
    floor_seconds,
    scaled_compute,
    steady_state,
    tight_host_bytes,
)

REPO = Path(__file__).resolve().parent.parent
CASE_SCRIPT = Path(__file__).resolve().parent / "_train_case.py"
MiB, GiB = 1 << 20, 1 << 30
OVERHEAD_TARGET = 1.15
TIGHT_TARGET = 1.2
CAPACITY_RATIO_TARGET = 1.2
NVME_SPEEDUP_TARGET = 2.0
CPU_SPEEDUP_TARGET = 1.0
BYTES_PER_PARAM_STATE = 18  # bf16 param + fp32 grad + fp32 master, m, v (as the issue counts)
CAPACITY_RSS_TARGET = 6 * GiB


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_total() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemTotal not in /proc/meminfo")


def model_params(m: dict) -> int:
    """Trainable parameters of the GPT ``m`` describes (LM head tied)."""
    from tiermem.train.models import GPTConfig

    cfg = GPTConfig(
        vocab_size=m["vocab"],
        hidden_size=m["hidden"],
        num_layers=m["layers"],
        num_heads=m["heads"],
        seq_len=m["seq"],
    )
    return cfg.num_parameters


def disk_bandwidth(directory: Path, size: int) -> dict:
    """Best read and write GB/s of ``tiermem.diskbench``'s quick sweep on ``directory``."""
    from tiermem import diskbench

    result = diskbench.run(diskbench.DiskBenchConfig.quick(directory, size))
    rows = result["results"]
    best = {
        op: max((r for r in rows if r["op"] == op), key=lambda r: r["gbps"])
        for op in ("read", "write")
    }
    return {
        "best_read_gbps": best["read"]["gbps"],
        "best_write_gbps": best["write"]["gbps"],
        "best_read_config": {k: best["read"][k] for k in ("backend", "block_size", "queue_depth")},
        "filesystem": result.get("filesystem"),
        "o_direct": result.get("o_direct"),
        "size": size,
        "rows": rows,
    }


def run_case(spec: dict, scratch: Path, timeout: float, contend: int = 0) -> dict:
    """Run one case in a fresh interpreter with ``contend`` busy processes beside it; its
    JSON result (``error`` set on failure)."""
    name = spec.get("name") or f"{spec['impl']}-{spec['placement']}"
    spec = {**spec, "nvme_dir": str(scratch / name), "port": _free_port()}
    spec_path = scratch / f"{name}.spec.json"
    out_path = scratch / f"{name}.out.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1"}
    print(f"case {name} ...", flush=True)
    t0 = time.perf_counter()
    load = {"start": os.getloadavg()}
    try:
        with busy_processes(contend):
            proc = subprocess.run(
                [sys.executable, str(CASE_SCRIPT), str(spec_path), str(out_path)],
                env=env,
                timeout=timeout,
                capture_output=True,
                text=True,
            )
    except subprocess.TimeoutExpired:
        return {"spec": spec, "error": f"timed out after {timeout:.0f} s"}
    finally:
        shutil.rmtree(scratch / name, ignore_errors=True)
    wall = time.perf_counter() - t0
    load["end"] = os.getloadavg()
    if not out_path.exists():
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        return {"spec": spec, "error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    result = json.loads(out_path.read_text())
    result.update(process_seconds=wall, contend=contend, load_average=load)
    return result


def merge_rounds(results: list[dict], warmup: int) -> dict:
    """One result from a case's rounds: the measured steps of all of them (warm-up dropped)."""
    failed = [r for r in results if r.get("error")]
    if failed:
        return failed[0]
    merged = dict(results[-1])
    merged["steps"] = [s for r in results for s in (r["steps"][warmup:] or r["steps"])]
    merged["init_seconds"] = statistics.median(r["init_seconds"] for r in results)
    merged["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in results)
    merged["rounds"] = len(results)
    return merged


def summarize(result: dict, warmup: int) -> dict:
    """Median step time after warm-up, and per-step I/O where the case has a store."""
    if result.get("error"):
        return {"error": result["error"]}
    steps = result["steps"][warmup:] or result["steps"]
    out: dict[str, Any] = {
        "step_seconds": statistics.median(s["seconds"] for s in steps),
        "step_seconds_all": [round(s["seconds"], 4) for s in result["steps"]],
        "init_seconds": round(result["init_seconds"], 3),
        "peak_rss_bytes": result["peak_rss_bytes"],
        "loss_first_last": [result["steps"][0]["loss"], result["steps"][-1]["loss"]],
        "phase_seconds": {
            k: statistics.median(s["phases"][k] for s in steps)
            for k in ("forward", "backward", "step")
        },
    }
    if all("cpu" in s["phases"] for s in steps):
        out["cpu_seconds"] = statistics.median(s["phases"]["cpu"] for s in steps)
    if "bytes_moved" in steps[0]:
        read = statistics.median(s["bytes_moved"].get("nvme->host", 0) for s in steps)
        write = statistics.median(s["bytes_moved"].get("host->nvme", 0) for s in steps)
        out.update(
            read_bytes_per_step=int(read),
            write_bytes_per_step=int(write),
            stall_seconds_per_step=statistics.median(s["stall_seconds"] for s in steps),
            prefetch_hits=sum(s["prefetch_hits"] for s in steps),
            prefetch_misses=sum(s["prefetch_misses"] for s in steps),
            write_behinds=sum(s.get("write_behinds", 0) for s in steps),
            eviction_writes=sum(s.get("eviction_writes", 0) for s in steps),
            host_budget_bytes=result["store"]["tiers"].get("host", {}).get("budget", 0),
            tiers=result["store"]["tiers"],
        )
        if result.get("min_bytes_per_step"):
            minimum = result["min_bytes_per_step"]
            out["min_bytes_per_step"] = minimum
            out["bytes_over_min"] = bytes_against_min({"read": read, "write": write}, minimum)
    return out


def overhead(tm_none: dict, tm_nvme: dict, disk: dict, tm_cpu: dict | None = None) -> dict:
    """The offload overhead ratio of tiermem NVMe against its compute-only step and the disk.

    [Note: the issue's compute-only step is the everything-in-RAM run (offload
    none). Where tiermem's optimizer-on-host step is faster than that (its
    fused CPU Adam against the in-RAM path), ``ratio_vs_best_in_ram`` also
    gives the harsher figure against the faster of the two.]
    """
    if "error" in tm_none or "error" in tm_nvme:
        return {"error": "a tiermem case failed"}
    compute = tm_none["step_seconds"]
    step = tm_nvme["step_seconds"]
    read, write = tm_nvme["read_bytes_per_step"], tm_nvme["write_bytes_per_step"]
    io_seconds = read / (disk["best_read_gbps"] * 1e9) + write / (disk["best_write_gbps"] * 1e9)
    bound = max(compute, io_seconds)
    out = {
        "compute_only_step_seconds": compute,
        "nvme_step_seconds": step,
        "bytes_moved_per_step": read + write,
        "read_bytes_per_step": read,
        "write_bytes_per_step": write,
        "achieved_read_gbps": read / step / 1e9,
        "achieved_write_gbps": write / step / 1e9,
        "achieved_total_gbps": (read + write) / step / 1e9,
        "io_seconds_at_disk_best": io_seconds,
        "bound_seconds": bound,
        "ratio": step / bound,
        "target": OVERHEAD_TARGET,
        "met": step / bound <= OVERHEAD_TARGET,
    }
    if tm_cpu and "step_seconds" in tm_cpu:
        best = min(compute, tm_cpu["step_seconds"])
        out["ratio_vs_best_in_ram"] = step / max(best, io_seconds)
    return out


def versus_deepspeed(summary: dict[str, dict]) -> dict:
    """DeepSpeed step / tiermem step per placement (> 1: tiermem faster)."""
    out = {}
    targets = {"nvme": NVME_SPEEDUP_TARGET, "cpu": CPU_SPEEDUP_TARGET, "none": None}
    for where, target in targets.items():
        tm, ds = summary.get(f"tiermem-{where}"), summary.get(f"deepspeed-{where}")
        if not tm or not ds or "step_seconds" not in tm or "step_seconds" not in ds:
            continue
        speedup = ds["step_seconds"] / tm["step_seconds"]
        out[where] = {"speedup": speedup, "target": target}
        if "cpu_seconds" in tm and "cpu_seconds" in ds:  # process CPU time: less load-bound
            out[where]["cpu_time_ratio"] = ds["cpu_seconds"] / tm["cpu_seconds"]
        if target is not None:
            out[where]["met"] = speedup >= target
    return out


def print_table(summary: dict[str, dict]) -> None:
    """One row per case."""
    print(
        f"\n{'case':<19} {'step s':>8} {'init s':>7} {'peak RSS':>9} {'read/step':>10} "
        f"{'write/step':>10} {'stall/step':>10}  fwd / bwd / step s"
    )
    for name, s in summary.items():
        if "error" in s or "skipped" in s:
            print(f"{name:<19} {s.get('skipped') or s.get('error')}")
            continue
        io = ("", "", "")
        if "read_bytes_per_step" in s:
            io = (
                f"{s['read_bytes_per_step'] / MiB:.1f} MiB",
                f"{s['write_bytes_per_step'] / MiB:.1f} MiB",
                f"{s['stall_seconds_per_step']:.3f} s",
            )
        print(
            f"{name:<19} {s['step_seconds']:>8.3f} {s['init_seconds']:>7.1f} "
            f"{s['peak_rss_bytes'] / GiB:>7.2f} G {io[0]:>10} {io[1]:>10} {io[2]:>10}  "
            + " / ".join(f"{s['phase_seconds'][k]:.3f}" for k in ("forward", "backward", "step"))
        )


def _model_args(args: argparse.Namespace) -> dict:
    return {
        "vocab": args.vocab,
        "hidden": args.hidden,
        "layers": args.layers,
        "heads": args.heads,
        "seq": args.seq,
    }


def run_comparison(args: argparse.Namespace, scratch: Path) -> dict:
    """The overhead and DeepSpeed cases; the JSON result."""
    load_start = os.getloadavg()
    disk = disk_bandwidth(scratch, args.disk_size)
    print(
        f"disk ({disk['filesystem']}, O_DIRECT {disk['o_direct']}): best read "
        f"{disk['best_read_gbps']:.2f} GB/s, best write {disk['best_write_gbps']:.2f} GB/s"
    )
    base = {
        "model": _model_args(args),
        "batch": args.batch,
        "warmup": args.warmup,
        "steps": args.steps,
        "precision": args.precision,
        "sub_group_size": args.sub_group_size,
        "threads": args.threads,
    }
    cases = [("tiermem", "none"), ("tiermem", "nvme"), ("tiermem", "cpu")]
    state = model_params(base["model"]) * BYTES_PER_PARAM_STATE
    extra: dict[str, dict] = {}
    if args.tight_fraction > 0:
        cases.append(("tiermem", "nvme-tight"))
        # [Note: one lent parameter buffer and one optimizer buffer of 1M-element
        #  sub-groups, so that what the engine holds fetched at once (lent groups,
        #  the sub-group updated and the one read ahead) fits the capped budget:
        #  with the defaults (5 lent buffers of the largest shard, 4M-element
        #  sub-groups) it alone can exceed 25% of the state.]
        extra["nvme-tight"] = {
            "placement": "nvme",
            "name": "tiermem-nvme-tight",
            "store_host_bytes": tight_host_bytes(state, args.tight_fraction),
            "offload_param": {"buffer_count": 1},
            "offload_optimizer": {"buffer_count": 1},
            "sub_group_size": min(args.sub_group_size, 1_000_000),
        }
    skipped: dict[str, str] = {}
    if args.no_deepspeed:
        skipped["deepspeed"] = "--no-deepspeed"
    elif importlib.util.find_spec("deepspeed") is None:
        skipped["deepspeed"] = "not installed (bench/setup_peers.sh installs it)"
    else:
        cases += [("deepspeed", "none"), ("deepspeed", "cpu"), ("deepspeed", "nvme")]
    # [Note: the machine is shared and its load changes from minute to minute.
    #  With --rounds N every case runs N times, in alternating order (A..F, F..A),
    #  and a case's median is over the measured steps of all its rounds, so that
    #  tiermem and DeepSpeed meet the same load on average.]
    runs: dict[str, list[dict]] = {f"{impl}-{where}": [] for impl, where in cases}
    for r in range(args.rounds):
        for impl, where in cases if r % 2 == 0 else cases[::-1]:
            name = f"{impl}-{where}"
            spec = {**base, "impl": impl, "placement": where, **extra.get(where, {})}
            result = run_case(spec, scratch, args.timeout, args.contend)
            runs[name].append(result)
            s = summarize(result, args.warmup)
            print(
                f"  round {r + 1} {name}: "
                + (s["error"] if "error" in s else f"{s['step_seconds']:.3f} s/step")
                + f" (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    raw = {name: merge_rounds(results, args.warmup) for name, results in runs.items()}
    summary = {name: summarize(result, 0) for name, result in raw.items()}
    for tool, reason in skipped.items():
        print(f"skip {tool}: {reason}")
    load_end = os.getloadavg()
    print_table(summary)
    over = overhead(
        summary["tiermem-none"], summary["tiermem-nvme"], disk, summary.get("tiermem-cpu")
    )
    if "error" not in over:
        print(
            f"\noffload overhead: NVMe step {over['nvme_step_seconds']:.3f} s, compute-only "
            f"{over['compute_only_step_seconds']:.3f} s, moved "
            f"{over['bytes_moved_per_step'] / MiB:.1f} MiB/step (achieved "
            f"{over['achieved_total_gbps']:.2f} GB/s; I/O at disk best "
            f"{over['io_seconds_at_disk_best']:.3f} s) -> ratio {over['ratio']:.2f} "
            f"(target <= {OVERHEAD_TARGET}: {'met' if over['met'] else 'NOT met'})"
        )
        if "ratio_vs_best_in_ram" in over:
            print(
                f"  against the faster in-RAM tiermem step (none or cpu): "
                f"{over['ratio_vs_best_in_ram']:.2f}"
            )
    tight = tight_case(summary, disk, state, args.tight_fraction)
    if tight and "error" not in tight:
        over_min = tight.get("bytes_over_min") or {}
        print(
            f"tight NVMe case (host budget {tight['host_budget_bytes'] / MiB:.0f} MiB = "
            f"{tight['host_fraction']:.2f} of the state): step {tight['step_seconds']:.3f} s, "
            f"floor {tight['floor_seconds']:.3f} s -> tight_ratio {tight['tight_ratio']:.2f} "
            f"(target <= {TIGHT_TARGET}); moved {tight['bytes_per_step'] / MiB:.1f} MiB/step = "
            f"{over_min.get('total') or 0:.3f}x the placement's minimum"
        )
    vs = versus_deepspeed(summary)
    for where, v in vs.items():
        target = (
            ""
            if v["target"] is None
            else (f" (target >= {v['target']}: {'met' if v['met'] else 'NOT met'})")
        )
        cpu = f"; CPU time {v['cpu_time_ratio']:.2f}x less" if "cpu_time_ratio" in v else ""
        print(f"vs DeepSpeed {where}: tiermem {v['speedup']:.2f}x faster{target}{cpu}")
    print(
        f"load average: start {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"end {' '.join(f'{x:.2f}' for x in load_end)} (2-core machine shared with others)"
    )
    return {
        "disk": disk,
        "cases": summary,
        "raw": raw,
        "overhead": over,
        "vs_deepspeed": vs,
        "tight": tight,
        "tight_ratio": (tight or {}).get("tight_ratio"),
        "contend": args.contend,
        "skipped": skipped,
        "load_average": {"start": load_start, "end": load_end},
    }


def tight_case(summary: dict[str, dict], disk: dict, state: int, fraction: float) -> dict | None:
    """The tight NVMe case against its floor: ``max(tiermem-none step, its I/O at disk best)``."""
    tight, none = summary.get("tiermem-nvme-tight"), summary.get("tiermem-none")
    if tight is None:
        return None
    if "error" in tight or not none or "error" in none:
        return {"error": "the tight or the none case failed"}
    read, write = tight["read_bytes_per_step"], tight["write_bytes_per_step"]
    floor = floor_seconds(none["step_seconds"], read, write, disk)
    budget = tight["host_budget_bytes"]
    return {
        "step_seconds": tight["step_seconds"],
        "floor_seconds": floor,
        "tight_ratio": tight["step_seconds"] / floor,
        "target": TIGHT_TARGET,
        "met": tight["step_seconds"] / floor <= TIGHT_TARGET,
        "host_budget_bytes": budget,
        "state_bytes": state,
        "host_fraction": budget / state,
        "requested_fraction": fraction,
        "bytes_per_step": read + write,
        "min_bytes_per_step": tight.get("min_bytes_per_step"),
        "bytes_over_min": tight.get("bytes_over_min"),
        "stall_fraction": tight["stall_seconds_per_step"] / tight["step_seconds"],
    }


def capacity_model(ram: int, factor: float, hidden: int, heads: int, seq: int) -> dict:
    """A GPT whose training state (18 B/param) is at least ``factor`` x ``ram``."""
    per_layer = 12 * hidden * hidden + 13 * hidden
    need = factor * ram / BYTES_PER_PARAM_STATE
    layers = max(1, -(-int(need - 256 * hidden - seq * hidden) // per_layer))
    return {"vocab": 256, "hidden": hidden, "layers": layers, "heads": heads, "seq": seq}


def capacity_spec(model: dict, args: argparse.Namespace) -> dict:
    """The case spec of the capacity run: NVMe params and optimizer, built in init_context.

    [Note: the parameter buffers and the prefetch bucket are sized to the
    largest layer (the MLP's ``4h x h`` weight and bias) rather than to
    DeepSpeed's 100M-element default: the store's host budget is a few of
    these buffers, so this is what bounds RSS by the largest layer. Blocks
    run under activation checkpointing, so activations held between forward
    and backward are one ``(batch, seq, hidden)`` tensor per block.]
    """
    h = model["hidden"]
    largest = 4 * h * h + 4 * h
    return {
        "model": model,
        "batch": args.batch,
        "warmup": 0,
        "steps": args.capacity_steps,
        "precision": "bf16",
        "sub_group_size": args.sub_group_size,
        "threads": args.threads,
        "impl": "tiermem",
        "placement": "nvme",
        "init_context": True,
        "activation_checkpointing": True,
        "offload_param": {"buffer_size": largest},
        "zero_optimization": {"stage3_prefetch_bucket_size": largest},
    }


def _mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return _mem_total() // 2


def compute_only_layers(model: dict, available: int, share: float = 0.5) -> int:
    """The most layers (<= the model's) whose in-memory training state fits ``share`` of
    ``available`` bytes (at least 1)."""
    layers = model["layers"]
    while (
        layers > 1
        and model_params({**model, "layers": layers}) * (BYTES_PER_PARAM_STATE + 2)
        > share * available
    ):
        layers -= 1
    return layers


def run_compute_only(model: dict, args: argparse.Namespace, scratch: Path) -> dict:
    """The capacity model's step with everything in RAM (fewer layers, scaled per layer,
    when it does not fit): the compute side of the floor."""
    layers = compute_only_layers(model, _mem_available())
    shape = {**model, "layers": layers}
    spec = {
        **capacity_spec(shape, args),
        "name": "tiermem-none-compute",
        "placement": "none",
        "init_context": False,
        "warmup": 1,
        "steps": args.compute_steps,
    }
    for key in ("offload_param", "zero_optimization"):
        spec.pop(key)
    print(f"compute-only: {layers} of {model['layers']} layers in RAM ...", flush=True)
    raw = run_case(spec, scratch, args.timeout, args.contend)
    s = summarize(raw, 1)
    if "error" in s:
        return {"error": s["error"], "layers_measured": layers}
    return {
        "layers_measured": layers,
        "layers": model["layers"],
        "measured_step_seconds": s["step_seconds"],
        "step_seconds": scaled_compute(s["step_seconds"], layers, model["layers"]),
        "step_seconds_all": s["step_seconds_all"],
        "peak_rss_bytes": s["peak_rss_bytes"],
    }


def capacity_report(raw: dict, disk: dict, compute: dict) -> dict:
    """The steady state of the capacity run against its floor, and bytes against the minimum."""
    out: dict[str, Any] = {}
    if "error" in compute:
        out["steady_error"] = f"compute-only case failed: {compute['error']}"
        return out
    try:
        out.update(steady_state(raw["steps"], disk, compute["step_seconds"]))
    except ValueError as exc:
        out["steady_error"] = str(exc)
        return out
    if raw.get("min_bytes_per_step"):
        out["min_bytes_per_step"] = raw["min_bytes_per_step"]
        out["bytes_over_min"] = bytes_against_min(out["bytes_per_step"], raw["min_bytes_per_step"])
    st = out["steady"]
    st["target"] = CAPACITY_RATIO_TARGET
    st["met"] = st["ratio"] <= CAPACITY_RATIO_TARGET
    st["read_fraction_of_disk_best"] = st["read_gbps"] / disk["best_read_gbps"]
    return out


def run_capacity(args: argparse.Namespace, scratch: Path) -> dict:
    """Train a model whose state is >= 2x RAM for ``--capacity-steps`` steps; peak RSS,
    tiers, the steady step against its floor, bytes against the placement's minimum."""
    load_start = os.getloadavg()
    ram = _mem_total()
    model = capacity_model(ram, args.capacity_factor, args.hidden, args.heads, args.seq)
    if args.capacity_layers:
        model["layers"] = args.capacity_layers
    params = model_params(model)
    state = params * BYTES_PER_PARAM_STATE
    # bf16 shards + fp32 master/m/v + fp32 gradient accumulators on NVMe; the swap
    # files' peak was up to ~25% above that at 0.2B-1B (growth, fragmentation)
    disk_need = int(params * BYTES_PER_PARAM_STATE * 1.25)
    free = shutil.disk_usage(scratch).free
    print(
        f"capacity: RAM {ram / GiB:.1f} GiB; model {params / 1e9:.2f}B params "
        f"({model['layers']} layers x hidden {model['hidden']}, seq {model['seq']}, vocab "
        f"{model['vocab']}), training state {state / GiB:.1f} GiB = {state / ram:.2f}x RAM; "
        f"NVMe needs ~{disk_need / GiB:.1f} GiB, {free / GiB:.1f} GiB free",
        flush=True,
    )
    if free < disk_need + args.keep_free_gib * GiB:
        raise SystemExit(
            f"--capacity: {scratch} has {free / GiB:.1f} GiB free, needs "
            f"{disk_need / GiB:.1f} GiB and --keep-free-gib {args.keep_free_gib} more"
        )
    disk = disk_bandwidth(scratch, args.disk_size)
    print(
        f"disk: best read {disk['best_read_gbps']:.2f} GB/s, best write "
        f"{disk['best_write_gbps']:.2f} GB/s",
        flush=True,
    )
    compute = run_compute_only(model, args, scratch)
    spec = capacity_spec(model, args)
    raw = run_case(spec, scratch, args.timeout, args.contend)
    s = summarize(raw, 0)
    out = {
        "contend": args.contend,
        "disk": disk,
        "compute_only": compute,
        "ram_bytes": ram,
        "model": model,
        "params": params,
        "state_bytes": state,
        "state_over_ram": state / ram,
        "peak_rss_target_bytes": CAPACITY_RSS_TARGET,
    }
    if "error" in s:
        print(f"capacity run failed: {s['error']}")
        load = {"start": load_start, "end": os.getloadavg()}
        return {**out, "summary": s, "raw": raw, "load_average": load}
    peak = raw["memory"]["VmHWM"]
    steps = raw["steps"]
    io = [
        {
            "step": r["step"],
            "seconds": r["seconds"],
            "read_bytes": r["bytes_moved"].get("nvme->host", 0),
            "write_bytes": r["bytes_moved"].get("host->nvme", 0),
            "read_gbps": r["bytes_moved"].get("nvme->host", 0) / r["seconds"] / 1e9,
            "write_gbps": r["bytes_moved"].get("host->nvme", 0) / r["seconds"] / 1e9,
            "stall_seconds": r["stall_seconds"],
            "vm_hwm_bytes": r["memory"]["VmHWM"],
        }
        for r in steps
    ]
    tiers = raw["store"]["tiers"]
    print(
        f"capacity: steps {s['step_seconds_all']} s (init {s['init_seconds']:.0f} s); peak RSS "
        f"(VmHWM) {peak / GiB:.2f} GiB (target <= {CAPACITY_RSS_TARGET / GiB:.0f}: "
        f"{'met' if peak <= CAPACITY_RSS_TARGET else 'NOT met'}), after init "
        f"{raw['memory_after_init']['VmHWM'] / GiB:.2f} GiB"
    )
    for row in io:
        print(
            f"  step {row['step']}: {row['seconds']:.1f} s, read {row['read_bytes'] / GiB:.1f} GiB "
            f"({row['read_gbps']:.2f} GB/s), wrote {row['write_bytes'] / GiB:.1f} GiB "
            f"({row['write_gbps']:.2f} GB/s), stalled {row['stall_seconds']:.1f} s"
        )
    print(
        "  tiers: "
        + ", ".join(
            f"{t} used {v.get('used', 0) / GiB:.2f} GiB (peak {v.get('peak', 0) / GiB:.2f}, "
            f"budget {v.get('budget', 0) / GiB:.2f})"
            for t, v in tiers.items()
        )
    )
    report = capacity_report(raw, disk, compute)
    if "steady" in report:
        st, over = report["steady"], report.get("bytes_over_min") or {}
        print(
            f"  steady ({len(report['steady_steps'])} steps after the schedule was recorded): "
            f"{st['step_seconds']:.2f} s against floor {st['floor_seconds']:.2f} s (compute "
            f"{st['compute_seconds']:.2f}, I/O at disk best {st['io_seconds_at_disk_best']:.2f})"
            f" -> ratio {st['ratio']:.2f} (target <= {CAPACITY_RATIO_TARGET}); stalled "
            f"{st['stall_fraction']:.2f}; read {st['read_gbps']:.2f} GB/s, write "
            f"{st['write_gbps']:.2f} GB/s; first step stalled "
            f"{report['first_step_stall_fraction']:.2f}; bytes {over.get('total') or 0:.3f}x min"
        )
    else:
        print(f"  steady state: {report.get('steady_error')}")
    load_end = os.getloadavg()
    print(
        f"load average: start {' '.join(f'{x:.2f}' for x in load_start)}, "
        f"end {' '.join(f'{x:.2f}' for x in load_end)}"
    )
    return {
        **out,
        **report,
        "load_average": {"start": load_start, "end": load_end},
        "peak_rss_bytes": peak,
        "met": peak <= CAPACITY_RSS_TARGET,
        "memory_after_init": raw["memory_after_init"],
        "per_step": io,
        "summary": s,
        "raw": raw,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options; ``--quick`` and ``--capacity`` set their own model sizes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=str(REPO / "scratch"), help="NVMe scratch parent directory")
    ap.add_argument("--quick", action="store_true", help="tiny model and steps: a smoke test")
    ap.add_argument("--capacity", action="store_true", help="state >= 2x RAM (manual)")
    ap.add_argument(
        "--capacity-steps", type=int, default=8, help="--capacity: steps (steady state after 2)"
    )
    ap.add_argument(
        "--compute-steps", type=int, default=3, help="--capacity: measured compute-only steps"
    )
    ap.add_argument(
        "--contend", type=int, default=0, help="busy processes beside each case (0: none)"
    )
    ap.add_argument(
        "--tight-fraction",
        type=float,
        default=0.25,
        help="tight NVMe case: store host budget as a share of the state (0: no tight case)",
    )
    ap.add_argument("--capacity-factor", type=float, default=2.0)
    ap.add_argument(
        "--capacity-layers", type=int, default=0, help="override the layer count (smaller runs)"
    )
    ap.add_argument("--keep-free-gib", type=float, default=10.0, help="--capacity: disk to spare")
    ap.add_argument("--no-deepspeed", action="store_true")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="measured steps after warm-up")
    ap.add_argument(
        "--rounds", type=int, default=1, help="run every case this many times, alternating order"
    )
    ap.add_argument("--sub-group-size", type=int, default=4_000_000)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--disk-size", default=None, help="diskbench file size (bytes)")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "train.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden = args.hidden or 64
        args.layers, args.heads, args.seq, args.vocab = 2, 2, 32, 256
        args.batch, args.warmup, args.steps = 2, 1, 3
        args.sub_group_size = min(args.sub_group_size, 20_000)
    if args.capacity:
        args.hidden = args.hidden or 4096
        args.heads, args.seq, args.batch = 32, min(args.seq, 128), 1
        args.timeout = max(args.timeout, 6 * 3600.0)
    args.hidden = args.hidden or 1024
    args.disk_size = (
        int(args.disk_size) if args.disk_size else (64 * MiB if args.quick else 256 * MiB)
    )
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 0 when it ran (targets are reported, not enforced)."""
    args = parse_args(argv)
    parent = Path(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-", dir=parent))
    model = _model_args(args)
    try:
        if args.capacity:
            body = {"capacity": run_capacity(args, scratch)}
        else:
            n = model_params(model)
            print(
                f"model: GPT {n / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers, "
                f"{args.heads} heads, seq {args.seq}, vocab {args.vocab}), batch {args.batch}, "
                f"{args.precision}; {args.warmup} warm-up + {args.steps} measured steps"
            )
            body = run_comparison(args, scratch)
            body["params"] = n
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "schema": "tiermem.bench.train/1",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {**machine_info(), "cpus": os.cpu_count()},
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        **body,
    }
    write_results(args.json, result, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
