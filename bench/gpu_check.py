"""tiermem on a real GPU, in one call: correctness, transfer rates and a 4090-sized run.

Run it through ``bench/gpu_check.sh`` on the lent GPU machine (it builds the
native library there and sets up the imports); see ``docs/gpu.md``. Sections:

1. ``correctness``: a small GPT, 20 steps, ZeRO stage 3 with parameters and
   optimizer states on NVMe, bf16 - the loss trajectory against plain torch
   (bf16 model, fp32 AdamW masters) on the same GPU.
2. ``transfer``: NVMe -> pinned host -> GPU and back, tiermem's path against
   plain torch/Python moving the same bytes (``_gpu_check_transfer.py``).
3. ``big``: GPU memory capped at 24 GiB (an RTX 4090), the largest GPT the
   planner says fits the disk, host memory and time (``_gpu_check_model.py``),
   a few steps: tokens/s, model TFLOPS, the share of step time spent waiting
   on NVMe.

Each section is guarded (a failure prints its error and the others still
run) and bounded by a share of ``--budget-s``; a watchdog prints what there
is and exits 3 if the budget plus ``--grace-s`` passes. The table comes
last; ``--json`` (default ``$OUT/gpu_check.json`` when ``OUT`` is set)
gets everything. Without CUDA it says it needs a GPU and exits 0, unless
``--allow-cpu`` runs the CPU-capable parts (the tests do).

Exit codes: 0 all sections ran (or no GPU), 1 a section failed or the
trajectories disagree, 2 usage error, 3 the watchdog fired.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the _gpu_check_* helpers beside this script

SECTIONS = ("correctness", "transfer", "big")
# Shares of the budget each section may use at most (the big run gets what is left).
SECTION_SHARE = {"correctness": 0.25, "transfer": 0.25, "big": 1.0}
NO_GPU_MESSAGE = (
    "gpu_check: needs a CUDA GPU (torch.cuda.is_available() is False); nothing to check here. "
    "Run it on a GPU machine through bench/gpu_check.sh, or pass --allow-cpu to run the "
    "CPU-capable parts."
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see ``--help``)."""
    p = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, default=330.0, help="whole run, seconds (330)")
    p.add_argument("--grace-s", type=float, default=45.0, help="watchdog slack after the budget")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma list of sections")
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU if there is no CUDA")
    p.add_argument(
        "--nvme-dir",
        type=Path,
        default=REPO / "scratch",
        help="directory on the drive to offload to (a subdirectory is made and removed)",
    )
    p.add_argument("--json", type=Path, default=None, help="where to write the JSON report")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("correctness")
    g.add_argument(
        "--small-shape", default="4096,512,4,8,256", help="vocab,hidden,layers,heads,seq"
    )
    g.add_argument("--small-steps", type=int, default=20)
    g.add_argument("--small-micro-batch", type=int, default=8)
    g.add_argument("--small-lr", type=float, default=1e-3)
    g.add_argument("--tolerance", type=float, default=1e-2, help="max relative loss difference")
    g = p.add_argument_group("transfer")
    g.add_argument("--transfer-mib", type=int, default=2048)
    g.add_argument("--chunk-mib", type=int, default=64)
    g.add_argument("--drop-caches", action="store_true", help="also drop the page cache (root)")
    g = p.add_argument_group("big")
    g.add_argument("--gpu-cap-gib", type=float, default=24.0, help="GPU memory cap (4090: 24)")
    g.add_argument("--big-shape", default="auto", help="auto, a ladder name, or five integers")
    g.add_argument("--big-steps", type=int, default=3, help="steps (the first is not timed)")
    g.add_argument("--big-micro-batch", type=int, default=0, help="0: the planner's")
    g.add_argument("--big-gas", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--host-ram-gib", type=float, default=None, help="default: MemTotal")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"--sections: unknown {bad}; expected some of {', '.join(SECTIONS)}")
    for name in ("budget_s", "small_steps", "small_micro_batch", "transfer_mib", "chunk_mib"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')}: expected a positive number")
    if args.big_steps < 1 or args.big_gas < 1 or args.big_micro_batch < 0:
        p.error("--big-steps and --big-gas must be >= 1, --big-micro-batch >= 0")
    args.work_dir = args.nvme_dir / f"tiermem-gpu-check-{os.getpid()}"
    if args.json is None and os.environ.get("OUT"):
        args.json = Path(os.environ["OUT"]) / "gpu_check.json"
    return args


# ----------------------------------------------------------------------------- report


class Report:
    """Everything measured so far; written as JSON after every section."""

    def __init__(self, json_path: Path | None) -> None:
        self.json_path = json_path
        self.env: dict = {}
        self.sections: dict[str, dict] = {}
        self.current: str | None = None
        self.partial: dict = {}  # what the running section has measured so far
        self.lock = threading.Lock()

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {"env": self.env, "sections": self.sections, "running": self.current}

    def write_json(self) -> None:
        """Write the report (if a path was given); never raises."""
        if self.json_path is None:
            return
        try:
            self.json_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.json_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.as_dict(), indent=1, default=str))
            tmp.replace(self.json_path)
        except OSError as exc:
            print(f"gpu_check: writing {self.json_path} failed: {exc}", file=sys.stderr)


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def table_rows(report: dict) -> list[tuple[str, str, str, str, str]]:
    """(section, metric, tiermem, baseline, note) rows summarising a report dict."""
    rows: list[tuple[str, str, str, str, str]] = []
    sections = report.get("sections", {})
    for name in SECTIONS:
        sec = sections.get(name)
        if sec is None:
            continue
        if sec.get("status") == "error":
            rows.append((name, "ERROR", "-", "-", sec.get("error", "")[:120]))
            continue
        if name == "correctness":
            eng, ref = sec["losses_engine"], sec["losses_torch"]
            rows.append(
                (
                    name,
                    f"loss 1 -> {len(eng)} ({sec['device']})",
                    f"{eng[0]:.4f} -> {eng[-1]:.4f}",
                    f"{ref[0]:.4f} -> {ref[-1]:.4f} (torch)",
                    f"max rel diff {sec['max_rel_diff']:.2e} "
                    f"({'PASS' if sec['status'] == 'ok' else 'FAIL'} <= {sec['tolerance']:g})",
                )
            )
        elif name == "transfer":
            for leg, tools in sec.get("rates_gbps", {}).items():
                tm = tools.get("tiermem")
                for tool, rate in tools.items():
                    if tool == "tiermem":
                        continue
                    ratio = f"x{tm / rate:.2f}" if tm and rate else ""
                    rows.append((name, f"{leg} GB/s", _fmt(tm), f"{_fmt(rate)} ({tool})", ratio))
                if len(tools) == 1:
                    rows.append((name, f"{leg} GB/s", _fmt(tm), "-", ""))
            for note in sec.get("skipped", []):
                rows.append((name, "skipped", "-", "-", note))
        elif name == "big":
            params = sec.get("params") or 0
            rows.append(
                (
                    name,
                    "model",
                    f"{sec.get('shape_name', '?')} {params / 1e9:.2f}B",
                    "-",
                    f"micro-batch {sec.get('micro_batch')} x seq {sec.get('seq')}, "
                    f"gas {sec.get('gas')}; params + optimizer on NVMe",
                )
            )
            rows.append((name, "tokens/s", _fmt(sec.get("tokens_per_s")), "-", ""))
            rows.append(
                (
                    name,
                    "model TFLOPS",
                    _fmt(sec.get("model_tflops")),
                    "156 (Fuyou, 4090, 13B)",
                    "ZeRO-Infinity: 45",
                )  # fmt: skip
            )
            rows.append(
                (
                    name,
                    "I/O wait share",
                    _fmt(sec.get("io_wait_fraction")),
                    "-",
                    "store stall s / step s",
                )  # fmt: skip
            )
            rows.append(
                (
                    name,
                    "step s (timed)",
                    _fmt(sec.get("step_seconds_median")),
                    f"{_fmt(sec.get('estimated_step_s'))} (plan)",
                    f"peak GPU "
                    f"{_fmt(sec.get('peak_gpu_gib'))} GiB of {_fmt(sec.get('gpu_cap_gib'))}",
                )  # fmt: skip
            )
    return rows


def format_table(rows: list[tuple[str, ...]]) -> str:
    """A fixed-width text table with a header line."""
    header = ("section", "metric", "tiermem", "baseline", "note")
    all_rows = [header, *rows]
    widths = [max(len(str(r[i])) for r in all_rows) for i in range(len(header))]
    lines = []
    for i, row in enumerate(all_rows):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_summary(report: Report, *, reason: str = "") -> None:
    """The table, last."""
    with report.lock:
        data = report.as_dict()
    print()
    print(f"== tiermem gpu_check{': ' + reason if reason else ''} ==")
    env = data["env"]
    print(
        f"device: {env.get('device', '?')}; torch {env.get('torch', '?')}; "
        f"host RAM {env.get('host_ram_gib', '?')} GiB; disk free {env.get('disk_free_gib', '?')} "
        f"GiB ({env.get('nvme_fs', '?')})"
    )
    print(format_table(table_rows(data)), flush=True)


# ----------------------------------------------------------------------------- helpers


def filesystem_of(path: Path) -> str:
    """The filesystem type and device of the mount holding ``path`` (from /proc/mounts)."""
    path = path.resolve()
    best, fs = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, kind = line.split()[:3]
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                best, fs = mnt, f"{kind} on {mnt} ({dev})"
    except OSError:
        pass
    return fs


def environment(args: argparse.Namespace, cuda: bool) -> dict:
    """What the run happened on."""
    import psutil
    import torch

    args.work_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "host_ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "host_available_gib": round(psutil.virtual_memory().available / 2**30, 1),
        "disk_free_gib": round(shutil.disk_usage(args.work_dir).free / 2**30, 1),
        "nvme_dir": str(args.work_dir),
        "nvme_fs": filesystem_of(args.work_dir),
        "kernel": platform.release(),
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        env.update(
            device=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            capability=f"{props.major}.{props.minor}",
        )
    else:
        env["device"] = "cpu (no CUDA)"
    try:
        from tiermem import native

        env["tiermem_library"] = str(native.path) if native.available() else "NOT LOADED"
    except Exception as exc:  # noqa: BLE001 - reported, never fatal here
        env["tiermem_library"] = f"error: {exc}"
    return env


def free_memory() -> None:
    """Collect garbage and return cached GPU memory between sections."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def zero3_nvme_config(
    nvme_dir: Path,
    *,
    micro_batch: int,
    lr: float,
    gas: int = 1,
    sub_group_size: int = 50_000_000,
    persistence_threshold: int = 100_000,
) -> dict:
    """ZeRO stage 3, parameters and optimizer states on NVMe, bf16, AdamW."""
    offload = {"device": "nvme", "nvme_path": str(nvme_dir), "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": gas,
        "train_batch_size": micro_batch * gas,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.1},
        },
        "bf16": {"enabled": True},
        "zero_optimization": {
            "stage": 3,
            "offload_param": dict(offload),
            "offload_optimizer": dict(offload),
            "sub_group_size": sub_group_size,
            "stage3_param_persistence_threshold": persistence_threshold,
        },
    }


def with_device_budget(cfg: dict, budget_bytes: int) -> tuple[dict, str]:
    """``cfg`` plus the engine's GPU budget option, if this engine has one.

    [Note: the ``device_budget`` option is being added to the engine while
    this script is written; it is used when the config parser knows the key
    (top level or under ``zero_optimization``) and accepts it, else the cap is
    torch's per-process memory fraction alone. Returns (config, note).]
    """
    from tiermem.engine.settings import engine_settings

    for where in ("top", "zero_optimization"):
        trial = json.loads(json.dumps(cfg))
        if where == "top":
            trial["device_budget"] = int(budget_bytes)
        else:
            trial["zero_optimization"]["device_budget"] = int(budget_bytes)
        try:
            settings = engine_settings(trial, world_size=1)
        except Exception:  # noqa: BLE001 - an unknown or refused key: try the next place
            continue
        if any(k.endswith("device_budget") for k in settings.raw.ignored_keys):
            continue  # accepted only as a key DeepSpeed skips (with a warning): not an option
        return trial, f"device_budget={budget_bytes} ({where})"
    return cfg, "engine has no device_budget option; torch memory fraction only"


def store_telemetry(engine) -> dict:
    """The engine's first store's telemetry snapshot ({} when it has no store)."""
    stores = getattr(getattr(engine, "placements", None), "stores", None) or []
    return stores[0].telemetry.snapshot() if stores else {}


def max_rel_diff(a: list[float], b: list[float]) -> float:
    """The largest per-step relative difference of two loss trajectories."""
    if len(a) != len(b):
        raise ValueError(f"trajectories of different lengths: {len(a)} and {len(b)}")
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))


# ----------------------------------------------------------------------------- section 1


def torch_reference_losses(model, batches, device, *, lr: float) -> list[float]:
    """Plain torch's mixed-precision recipe: bf16 model, fp32 masters under AdamW."""
    import torch

    params = list(model.parameters())
    masters = [p.detach().to(device, torch.float32).clone() for p in params]
    model = model.to(device=device, dtype=torch.bfloat16)
    params = list(model.parameters())
    opt = torch.optim.AdamW(masters, lr=lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    losses = []
    for idx, tgt in batches:
        loss = model(idx.to(device), tgt.to(device))
        losses.append(float(loss.detach()))
        loss.backward()
        for m, p in zip(masters, params, strict=True):
            m.grad = p.grad.float()
            p.grad = None
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for p, m in zip(params, masters, strict=True):
                p.copy_(m)
    return losses


def section_correctness(args: argparse.Namespace, deadline: float, partial: dict) -> dict:
    """Section 1: the engine's loss trajectory against plain torch on the same device."""
    import torch
    from _gpu_check_model import build_gpt, make_batches, parse_shape

    import tiermem

    shape = parse_shape(args.small_shape, name="small")
    batches = make_batches(shape, args.small_steps, micro_batch=args.small_micro_batch)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    ref = torch_reference_losses(
        build_gpt(shape, seed=args.seed), batches, device, lr=args.small_lr
    )
    torch_s = time.perf_counter() - t0
    losses: list[float] = []
    partial.update(shape=shape.describe(), losses_torch=ref, losses_engine=losses)
    free_memory()
    cfg = zero3_nvme_config(
        args.work_dir / "correctness",
        micro_batch=args.small_micro_batch,
        lr=args.small_lr,
        sub_group_size=max(4096, shape.num_params() // 8),
        persistence_threshold=0,
    )
    engine, _, _, _ = tiermem.initialize(model=build_gpt(shape, seed=args.seed), config=cfg)
    step_s = []
    try:
        for idx, tgt in batches:
            if time.monotonic() > deadline:
                raise TimeoutError(f"section budget spent after {len(losses)} steps")
            t = time.perf_counter()
            loss = engine(idx.to(engine.device), tgt.to(engine.device))
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
            step_s.append(time.perf_counter() - t)
        tele = store_telemetry(engine)
        engine_device = str(engine.device)
    finally:
        engine.close()
    diff = max_rel_diff(losses, ref)
    return {
        "status": "ok" if diff <= args.tolerance else "mismatch",
        "shape": shape.describe(),
        "device": engine_device,
        "steps": len(losses),
        "losses_engine": losses,
        "losses_torch": ref,
        "max_rel_diff": diff,
        "tolerance": args.tolerance,
        "engine_step_s_median": statistics.median(step_s),
        "torch_run_s": torch_s,
        "store": {
            k: tele.get(k) for k in ("bytes_moved", "write_backs", "prefetch_hits", "stall_seconds")
        },
    }


# ----------------------------------------------------------------------------- section 2


def section_transfer(args: argparse.Namespace, deadline: float, partial: dict) -> dict:
    """Section 2: NVMe <-> pinned host <-> GPU rates against plain torch."""
    import torch
    from _gpu_check_transfer import MIB, TransferConfig, TransferRun

    cfg = TransferConfig(
        directory=args.work_dir / "transfer",
        nbytes=args.transfer_mib * MIB,
        chunk_bytes=args.chunk_mib * MIB,
        use_cuda=torch.cuda.is_available(),
        drop_caches=args.drop_caches,
    )
    run = TransferRun(cfg, deadline=deadline)
    partial.update(rates_gbps=run.rates, facts=run.facts, skipped=run.skipped)
    out = run.run()
    out["status"] = "ok"
    out["nbytes"] = cfg.nbytes
    return out


# ----------------------------------------------------------------------------- section 3


def measure_adam_rate(numel: int = 1 << 24) -> float:
    """Elements per second of tiermem's CPU Adam (fp32 states, bf16 out) on this machine."""
    import torch

    from tiermem import adam

    master, m, v, grad = (torch.zeros(numel) for _ in range(4))
    grad.fill_(1e-3)
    out = torch.empty(numel, dtype=torch.bfloat16)
    adam.adam_step(master, m, v, grad, step=1, param_out=out)  # warm-up: page faults, threads
    t0 = time.perf_counter()
    for step in range(2, 5):
        adam.adam_step(master, m, v, grad, step=step, param_out=out)
    return 3 * numel / (time.perf_counter() - t0)


def machine_facts(args: argparse.Namespace, transfer: dict | None, cuda: bool):
    """What the planner knows: sizes, and rates measured by section 2 where it ran."""
    import psutil
    from _gpu_check_model import GIB, MachineFacts

    rates = (transfer or {}).get("rates_gbps", {})
    ram = args.host_ram_gib * GIB if args.host_ram_gib else psutil.virtual_memory().total
    kw = {}
    if rates.get("nvme_read", {}).get("tiermem"):
        kw["nvme_read_bytes_per_s"] = rates["nvme_read"]["tiermem"] * 1e9
    if rates.get("nvme_write", {}).get("tiermem"):
        kw["nvme_write_bytes_per_s"] = rates["nvme_write"]["tiermem"] * 1e9
    if rates.get("d2h", {}).get("torch pageable"):
        kw["d2h_bytes_per_s"] = rates["d2h"]["torch pageable"] * 1e9
    if not cuda:
        kw["gpu_flops"] = 5e10  # a CPU "device": only the --allow-cpu plumbing runs here
    return MachineFacts(
        host_ram_bytes=int(ram),
        disk_free_bytes=shutil.disk_usage(args.work_dir).free,
        gpu_budget_bytes=int(args.gpu_cap_gib * GIB),
        adam_params_per_s=measure_adam_rate(),
        **kw,
    )


def cap_gpu_memory(cap_bytes: int) -> float:
    """Cap this process's CUDA allocations at ``cap_bytes`` (returns the fraction set)."""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    fraction = min(1.0, cap_bytes / total)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    torch.cuda.reset_peak_memory_stats()
    return fraction


def section_big(
    args: argparse.Namespace, deadline: float, partial: dict, transfer: dict | None
) -> dict:
    """Section 3: the largest model that fits, GPU capped at 4090 size, a few steps."""
    import torch
    from _gpu_check_model import (
        GIB,
        build_gpt,
        choose_micro_batch,
        estimate_run,
        model_tflops,
        parse_shape,
        plan_run,
    )

    import tiermem

    cuda = torch.cuda.is_available()
    facts = machine_facts(args, transfer, cuda)
    seconds_left = deadline - time.monotonic()
    plan_result = plan_run(facts, steps=args.big_steps, seconds_left=seconds_left)
    out = partial
    out.update(
        {
            "status": "ok",
            "facts": {k: getattr(facts, k) for k in facts.__dataclass_fields__},
            "plan": [c.as_dict() for c in plan_result.candidates],
            "gpu_cap_gib": args.gpu_cap_gib,
            "placement": "stage 3, params + optimizer on NVMe, bf16, activation checkpointing",
        }
    )
    if args.big_shape != "auto":
        shape = parse_shape(args.big_shape, name="forced")
        estimate = estimate_run(shape, facts, steps=args.big_steps, seconds_left=seconds_left)
    elif plan_result.chosen is None:
        reasons = "; ".join(f"{c.shape.name}: {c.rejected}" for c in plan_result.candidates[:3])
        raise RuntimeError(f"the planner found no model that fits ({reasons})")
    else:
        estimate = plan_result.chosen
        shape = estimate.shape
    micro_batch = args.big_micro_batch or choose_micro_batch(shape, facts.gpu_budget_bytes) or 1
    out.update(
        shape=shape.describe(),
        shape_name=shape.name,
        params=shape.num_params(),
        micro_batch=micro_batch,
        seq=shape.seq,
        gas=args.big_gas,
    )
    out["estimated_step_s"] = round(estimate.step_seconds, 1)
    if cuda:
        out["gpu_memory_fraction"] = cap_gpu_memory(int(args.gpu_cap_gib * GIB))
    cfg = zero3_nvme_config(
        args.work_dir / "big", micro_batch=micro_batch, lr=1e-4, gas=args.big_gas
    )
    cfg, out["device_budget"] = with_device_budget(cfg, int(args.gpu_cap_gib * GIB))
    t0 = time.perf_counter()
    model = build_gpt(shape, seed=args.seed, dtype=torch.bfloat16, tiled=True)
    out["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine, _, _, _ = tiermem.initialize(model=model, config=cfg)
    out["init_s"] = time.perf_counter() - t0
    model.checkpoint_fn = engine.checkpoint
    try:
        _big_steps(args, engine, shape, micro_batch, deadline, out)
    finally:
        engine.close()
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, 0)
    timed = out["step_seconds"][1:] or out["step_seconds"]
    stalls = out["stall_seconds"][1:] or out["stall_seconds"]
    tokens = micro_batch * shape.seq * args.big_gas
    median = statistics.median(timed)
    out.update(
        timed_steps=len(timed),
        tokens_per_step=tokens,
        step_seconds_median=median,
        tokens_per_s=tokens / median,
        model_tflops=model_tflops(shape.num_params(), tokens, median),
        io_wait_fraction=sum(stalls) / sum(timed),
    )
    return out


def _big_steps(args, engine, shape, micro_batch: int, deadline: float, out: dict) -> None:
    """Run the steps, recording wall time per step and phase, and store stall seconds."""
    import torch

    cuda = torch.cuda.is_available()
    gen = torch.Generator(device=engine.device).manual_seed(args.seed)
    out.update(step_seconds=[], fwd_bwd_seconds=[], optimizer_seconds=[], stall_seconds=[])
    out["losses"] = []

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    for step in range(args.big_steps):
        last = out["step_seconds"][-1] if out["step_seconds"] else 0.0
        if step >= 2 and time.monotonic() + 1.3 * last > deadline:
            out["stopped_early"] = f"time budget: {step} of {args.big_steps} steps run"
            break
        stall0 = store_telemetry(engine).get("stall_seconds", 0.0)
        t0 = time.perf_counter()
        fwd_bwd = 0.0
        for _ in range(args.big_gas):
            size = (micro_batch, shape.seq)
            idx = torch.randint(0, shape.vocab, size, device=engine.device, generator=gen)
            tgt = torch.randint(0, shape.vocab, size, device=engine.device, generator=gen)
            t = time.perf_counter()
            loss = engine(idx, tgt)
            engine.backward(loss)
            sync()
            fwd_bwd += time.perf_counter() - t
            t = time.perf_counter()
            engine.step()  # the optimizer runs at the accumulation boundary
            sync()
            opt = time.perf_counter() - t
        out["step_seconds"].append(time.perf_counter() - t0)
        out["fwd_bwd_seconds"].append(fwd_bwd)
        out["optimizer_seconds"].append(opt)
        out["stall_seconds"].append(store_telemetry(engine).get("stall_seconds", 0.0) - stall0)
        out["losses"].append(float(loss.detach()))
        if cuda:
            out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        print(
            f"[big] step {step + 1}: {out['step_seconds'][-1]:.1f} s (fwd+bwd {fwd_bwd:.1f}, "
            f"optimizer {opt:.1f}, stall {out['stall_seconds'][-1]:.1f}), "
            f"loss {out['losses'][-1]:.3f}",
            flush=True,
        )


# ----------------------------------------------------------------------------- main


def run_section(
    report: Report, name: str, fn: Callable[[float, dict], dict], *, deadline: float
) -> None:
    """Run one section, recording its result or its error; never raises (bar KeyboardInterrupt).

    ``fn(deadline, partial)`` fills ``partial`` as it measures, so a section that
    fails (or that the watchdog stops) still reports what it got before.
    """
    partial: dict = {}
    with report.lock:
        report.current = name
        report.partial = partial
    print(f"[{name}] starting ({deadline - time.monotonic():.0f} s budget)", flush=True)
    t0 = time.perf_counter()
    try:
        result = fn(deadline, partial)
    except Exception as exc:  # noqa: BLE001 - one section's failure must not stop the others
        traceback.print_exc()
        result = {**partial, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
        print(f"[{name}] FAILED: {result['error']}", flush=True)
    result["seconds"] = round(time.perf_counter() - t0, 2)
    with report.lock:
        report.sections[name] = result
        report.current = None
    report.write_json()
    free_memory()
    print(f"[{name}] {result['status']} in {result['seconds']} s", flush=True)


def start_watchdog(report: Report, seconds: float) -> threading.Timer:
    """Print what there is and exit 3 if the run outlives ``seconds``."""

    def fire() -> None:
        with report.lock:
            running = report.current
            if running is not None:
                report.sections[running] = {
                    **report.partial,
                    "status": "error",
                    "error": f"TimeoutError: still running when the {seconds:.0f} s watchdog fired",
                }
        report.write_json()
        print_summary(report, reason=f"watchdog fired after {seconds:.0f} s in {running}")
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def main(argv: list[str] | None = None) -> int:
    """Run the check; see the module docstring for exit codes."""
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print(NO_GPU_MESSAGE + " (torch is not installed)")
        return 0
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print(NO_GPU_MESSAGE)
        return 0
    start = time.monotonic()
    end = start + args.budget_s
    report = Report(args.json)
    report.env = environment(args, cuda)
    report.env["args"] = {k: str(v) for k, v in vars(args).items()}
    print(json.dumps(report.env, default=str), flush=True)
    watchdog = start_watchdog(report, args.budget_s + args.grace_s)
    try:
        for name in args.sections:
            now = time.monotonic()
            deadline = min(end, now + SECTION_SHARE[name] * args.budget_s)
            if name == "correctness":
                run_section(
                    report, name, lambda d, p: section_correctness(args, d, p), deadline=deadline
                )
            elif name == "transfer":
                run_section(
                    report, name, lambda d, p: section_transfer(args, d, p), deadline=deadline
                )
            else:
                run_section(
                    report,
                    name,
                    lambda d, p: section_big(args, d, p, report.sections.get("transfer")),
                    deadline=deadline,
                )
    finally:
        watchdog.cancel()
        shutil.rmtree(args.work_dir, ignore_errors=True)
    report.write_json()
    print_summary(report)
    ok = all(s.get("status") == "ok" for s in report.sections.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
