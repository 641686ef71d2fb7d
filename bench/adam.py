"""CPU Adam benchmark: tiermem's fused kernel against torch and DeepSpeed.

Two workloads, each at several sizes, every case in a fresh process (so no
case inherits another's page-cache, allocator or thread-pool state):

1. ``fp32``: plain AdamW on fp32 params, moments and gradient (28 bytes moved
   per parameter: p, m, v read and written, gradient read).
2. ``offload``: the offload step - bf16 gradient in, unscale by the loss
   scale, overflow check, AdamW, bf16 parameter copy out (28 bytes nominal:
   p, m, v read+written, 2 B gradient, 2 B copy). Peers compose it from
   torch ops (cast, mul, isfinite, fused AdamW, cast).

A memory-bandwidth measurement (copy, in-place scale, triad) runs in the
same invocation, so each figure is also a fraction of this machine's limit.

Both workloads also run ``tiermem_bf16`` and ``tiermem_int8``: the same fused
step with bf16 or int8 (block-wise quantized) moments; the interleaved report
gives their throughput per parameter as a fraction of ``tiermem`` (fp32 states).

``--interleaved`` measures differently: per size and workload, one process
builds every tool's buffers (parameters and gradients shared, so 400M fits),
then the tools take turns, one step each, round after round with a short
sleep between turns and the order rotated each round. A drift of the
machine's speed (other jobs, frequency) then hits every tool alike; the
report gives medians, the median of the per-round ratios, and the spread.
Two in-place bandwidth kernels (``a *= s``: 8 B per element; ``a += s*b``:
12 B) take turns in the same rounds on arrays of the same size; the faster
one's median is the bound each figure is a fraction of. Below ~10M the
arrays sit in cache and the fraction means nothing; judge it at 100M+.

Usage::

    .venv/bin/python bench/adam.py                      # 10M, 100M, 400M
    .venv/bin/python bench/adam.py --quick              # small sizes
    .venv/bin/python bench/adam.py --sizes 50M --repeats 7 --json /tmp/adam.json
    .venv/bin/python bench/adam.py --interleaved --rounds 21 --impls tiermem,torch_fused,deepspeed
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_info, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NOMINAL_BYTES = 28  # per parameter, both workloads (see the module docstring)
LOSS_SCALE = 1024.0
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.999), 1e-8, 0.01

# tiermem_bf16 / tiermem_int8: the same fused step with the moments stored as bf16 or
# int8 (block-wise dynamic quantization); compared with tiermem (fp32 states) as
# throughput per parameter.
COMPACT = ("tiermem_bf16", "tiermem_int8")
CASES = {
    "fp32": ("tiermem", *COMPACT, "torch_fused", "torch_foreach", "deepspeed"),
    "offload": ("tiermem", *COMPACT, "tiermem_noskip", "torch_composed", "deepspeed_composed"),
}


def parse_size(text: str) -> int:
    """``10M`` -> 10_000_000 (decimal, as parameter counts are quoted)."""
    units = {"K": 10**3, "M": 10**6, "G": 10**9}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def deepspeed_adam():
    """DeepSpeedCPUAdam, or raise ImportError with the reason."""
    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam
    except Exception as exc:  # noqa: BLE001 - any failure means "not available"
        raise ImportError(f"deepspeed.ops.adam.DeepSpeedCPUAdam not importable: {exc}") from exc
    return DeepSpeedCPUAdam


# ---------------------------------------------------------------- workers --


def _tensors(n: int, grad_dtype, shared: dict | None = None):
    """Parameters and gradient; with ``shared``, made once and reused by every tool."""
    import torch

    key = ("p_g", n, grad_dtype)
    if shared is not None and key in shared:
        return shared[key]
    p = torch.empty(n).uniform_(-1, 1)
    g = torch.empty(n).normal_().to(grad_dtype)
    if shared is not None:
        shared[key] = (p, g)
    return p, g


def _scratch(name: str, n: int, dtype, shared: dict | None):
    """A scratch buffer (bf16 copy, fp32 gradient) that tools may share."""
    import torch

    if shared is None:
        return torch.empty(n, dtype=dtype)
    return shared.setdefault((name, n, dtype), torch.empty(n, dtype=dtype))


def _make_step(workload: str, impl: str, n: int, shared: dict | None = None):
    """Build the buffers for one case; return a zero-argument step function.

    [Note: with ``shared`` (the interleaved mode) all tools update the same
     parameter tensor from the same gradient; only optimizer states are per
     tool. The values drift differently than in a lone run, which does not
     change the time of a memory-bound step.]
    """
    import torch

    if impl in BANDWIDTH_KERNELS:
        return _bandwidth_step(impl, n, workload, shared)
    if impl.startswith("tiermem"):
        from tiermem import adam

        grad_dtype = torch.float32 if workload == "fp32" else torch.bfloat16
        p, g = _tensors(n, grad_dtype, shared)
        m, v = torch.full((n,), 0.01), torch.full((n,), 1e-4)
        scales = {}
        if impl == "tiermem_bf16":
            m, v = m.to(torch.bfloat16), v.to(torch.bfloat16)
        elif impl == "tiermem_int8":
            m, scales["exp_avg_absmax"] = adam.quantize_blockwise(m, True)
            v, scales["exp_avg_sq_absmax"] = adam.quantize_blockwise(v, False)
        out = _scratch("out", n, torch.bfloat16, shared) if workload == "offload" else None
        state = {"step": 0}

        def step():
            state["step"] += 1
            adam.adam_step(
                p,
                m,
                v,
                g,
                step=state["step"],
                lr=LR,
                betas=BETAS,
                eps=EPS,
                weight_decay=WD,
                inv_loss_scale=1.0 if workload == "fp32" else 1.0 / LOSS_SCALE,
                skip_on_overflow=impl != "tiermem_noskip" and workload == "offload",
                param_out=out,
                **scales,
            )

        return step

    if impl.startswith("deepspeed"):
        cls = deepspeed_adam()
        make_opt = lambda ps: cls(ps, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, adamw_mode=True)  # noqa: E731
    else:
        kind = {"torch_fused": "fused", "torch_foreach": "foreach", "torch_composed": "fused"}[impl]
        make_opt = lambda ps: torch.optim.AdamW(  # noqa: E731
            ps, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, **{kind: True}
        )

    if workload == "fp32":
        p, g = _tensors(n, torch.float32, shared)
        param = torch.nn.Parameter(p)
        param.grad = g
        opt = make_opt([param])
        return opt.step

    # offload, composed from torch ops around the optimizer
    p, g16 = _tensors(n, torch.bfloat16, shared)
    param = torch.nn.Parameter(p)
    opt = make_opt([param])
    out = _scratch("out", n, torch.bfloat16, shared)
    grad32 = _scratch("grad32", n, torch.float32, shared)
    param.grad = grad32

    def step():
        grad32.copy_(g16)  # cast
        grad32.mul_(1.0 / LOSS_SCALE)  # unscale
        if bool(torch.isfinite(grad32).all()):  # overflow check
            opt.step()
            out.copy_(param.detach())  # bf16 copy for the GPU
        else:
            raise RuntimeError("unexpected overflow")

    return step


# Memory-bandwidth kernels timed in the interleaved rounds beside the
# optimizers, on arrays of the optimizer's size: bytes moved per element.
# [Note: in-place updates are the bound that matters (every optimizer here
#  updates p, m and v in place); a separate probe in another process, at
#  another time and size, drifted 26-107 GB/s under a varying load and could
#  not say what fraction of the machine a step used.]
BANDWIDTH_KERNELS = {"bw_scale_inplace": 8, "bw_add_inplace": 12}


def _bandwidth_step(impl: str, n: int, workload: str, shared: dict | None):
    import torch

    # [Note: the parameters every tool shares double as the array scaled, to
    #  keep 400M within RAM; a factor this close to 1 leaves them usable.]
    grad_dtype = torch.float32 if workload == "fp32" else torch.bfloat16
    a = _tensors(n, grad_dtype, shared)[0]
    if impl == "bw_scale_inplace":
        return lambda: a.mul_(1.0000001)
    b = _scratch("bw_b", n, torch.float32, shared).fill_(0.5)
    return lambda: a.add_(b, alpha=1e-7)


def run_case(workload: str, impl: str, n: int, repeats: int) -> dict:
    import torch

    step = _make_step(workload, impl, n)
    step()  # warm-up: first-touch, optimizer state allocation
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    result = {"seconds": times, "median_s": statistics.median(times), "best_s": min(times)}
    result["torch_threads"] = torch.get_num_threads()
    if impl.startswith("tiermem"):
        from tiermem import adam

        result["simd"] = adam.simd_name()
        result["threads"] = adam.get_num_threads()
    return result


def run_bandwidth(n: int, repeats: int) -> dict:
    """STREAM-like copy, in-place scale and triad with torch (all threads)."""
    import torch

    a, b, c = (torch.full((n,), 1.0) for _ in range(3))
    kernels = {
        "copy": (lambda: b.copy_(a), 8),
        "scale_inplace": (lambda: a.mul_(1.0000001), 8),
        "triad": (lambda: torch.add(b, c, alpha=0.5, out=a), 12),
    }
    out = {}
    for name, (fn, bytes_per) in kernels.items():
        fn()
        best = min(_timed(fn) for _ in range(repeats))
        out[name] = n * bytes_per / best / 1e9
    return out


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_interleaved(
    workload: str, impls: list[str], n: int, rounds: int, sleep_s: float, warm_steps: int
) -> dict:
    """Every tool in one process, one timed step each per round, order rotated.

    Each turn is: sleep, ``warm_steps`` untimed steps, one timed step.
    Returns per-tool step times (or the reason a tool was skipped).

    [Note: the untimed step per turn wakes the tool's threads (OpenMP's for
     torch and DeepSpeed, our pool's) after the sleep, so no tool is charged
     for a wake-up the others avoid by luck of scheduling.]
    """
    shared: dict = {}
    steps, skipped = {}, {}
    for impl in impls:
        try:
            steps[impl] = _make_step(workload, impl, n, shared)
        except ImportError as exc:
            skipped[impl] = str(exc)
            continue
        steps[impl]()  # warm-up: first touch, optimizer state allocation
    names = list(steps)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)] if names else []
        for name in order:
            time.sleep(sleep_s)
            for _ in range(warm_steps):
                steps[name]()
            times[name].append(_timed(steps[name]))
    return {"seconds": times, "skipped": skipped}


def worker_main(args: argparse.Namespace) -> int:
    try:
        if args.worker == "bandwidth":
            res = {"ok": True, "gbps": run_bandwidth(args.n, args.repeats)}
        elif args.worker.startswith("interleaved:"):
            _, workload, impls = args.worker.split(":")
            run = run_interleaved(
                workload, impls.split(","), args.n, args.repeats, args.sleep, args.warm_steps
            )
            res = {"ok": True, **run}
        else:
            workload, impl = args.worker.split(":")
            res = {"ok": True, **run_case(workload, impl, args.n, args.repeats)}
    except ImportError as exc:
        res = {"ok": False, "skipped": str(exc)}
    print("RESULT " + json.dumps(res), flush=True)
    return 0


# ----------------------------------------------------------------- parent --


def spawn(
    worker: str, n: int, repeats: int, timeout: float, sleep_s: float = 0.0, warm_steps: int = 0
) -> dict:
    cmd = [sys.executable, __file__, "--worker", worker, "--n", str(n), "--repeats", str(repeats)]
    cmd += ["--sleep", str(sleep_s), "--warm-steps", str(warm_steps)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout:.0f}s"}
    for line in res.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"ok": False, "error": (res.stderr.strip().splitlines() or ["no output"])[-1]}


def fmt_n(n: int) -> str:
    return f"{n / 1e9:g}G" if n >= 10**9 else f"{n / 1e6:g}M"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10M,100M,400M", help="comma-separated parameter counts")
    ap.add_argument("--quick", action="store_true", help="small sizes (1M, 4M), few repeats")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per case (after warm-up)")
    ap.add_argument("--workloads", default="fp32,offload")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "adam.json"))
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    ap.add_argument(
        "--interleaved",
        action="store_true",
        help="all tools in one process per size and workload, taking turns round after round",
    )
    ap.add_argument("--rounds", type=int, default=15, help="--interleaved: rounds (one step each)")
    ap.add_argument(
        "--sleep", type=float, default=0.05, help="--interleaved: seconds between turns"
    )
    ap.add_argument(
        "--warm-steps",
        type=int,
        default=1,
        help="--interleaved: untimed steps before each timed one",
    )
    ap.add_argument(
        "--impls", default="", help="comma-separated tools to run (default: all of each workload)"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args)

    sizes = [1_000_000, 4_000_000] if args.quick else [parse_size(s) for s in args.sizes.split(",")]
    repeats = 3 if args.quick else args.repeats
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in CASES:
            ap.error(f"--workloads: unknown workload {w!r}; expected some of {sorted(CASES)}")
    wanted = [i for i in args.impls.split(",") if i]
    known = {i for impls in CASES.values() for i in impls}
    for i in wanted:
        if i not in known:
            ap.error(f"--impls: unknown tool {i!r}; expected some of {sorted(known)}")
    if args.rounds < 1 or args.sleep < 0 or args.warm_steps < 0:
        ap.error("--rounds must be >= 1, --sleep >= 0 and --warm-steps >= 0")
    cases = {w: [i for i in CASES[w] if not wanted or i in wanted] for w in workloads}

    if args.interleaved:  # the bandwidth kernels run inside the rounds there
        return interleaved_main(args, sizes, cases, {}, float("nan"))

    bw_n = min(max(sizes), 200_000_000)
    print(f"memory bandwidth ({fmt_n(bw_n)} floats per array) ...", flush=True)
    bw = spawn("bandwidth", bw_n, max(repeats, 3), args.timeout)
    limit = max(bw["gbps"].values()) if bw.get("ok") else float("nan")
    if bw.get("ok"):
        print("  " + ", ".join(f"{k} {v:.1f} GB/s" for k, v in bw["gbps"].items()))

    rows, skipped = [], {}
    for n in sizes:
        for workload in workloads:
            for impl in cases[workload]:
                if impl in skipped:
                    continue
                res = spawn(f"{workload}:{impl}", n, repeats, args.timeout)
                if not res.get("ok"):
                    reason = res.get("skipped") or res.get("error")
                    if res.get("skipped"):
                        skipped[impl] = reason
                    print(f"  {workload:8s} {fmt_n(n):>5s} {impl:20s} skipped: {reason}")
                    continue
                rate = n / res["median_s"]
                row = {
                    "workload": workload,
                    "n": n,
                    "impl": impl,
                    **res,
                    "params_per_s": rate,
                    "effective_gbps": rate * NOMINAL_BYTES / 1e9,
                }
                row["fraction_of_bandwidth"] = row["effective_gbps"] / limit
                rows.append(row)
                print(
                    f"  {workload:8s} {fmt_n(n):>5s} {impl:20s} {res['median_s'] * 1e3:9.1f} ms"
                    f" {rate / 1e9:6.3f} G params/s {row['effective_gbps']:6.1f} GB/s"
                    f" ({row['fraction_of_bandwidth']:.0%} of {limit:.1f})",
                    flush=True,
                )

    ratios = summarize(rows, sizes, limit)
    result = {
        "machine": {
            **machine_info(),
            "bandwidth_gbps": bw.get("gbps"),
            "bandwidth_limit_gbps": limit,
        },
        "nominal_bytes_per_param": NOMINAL_BYTES,
        "skipped": skipped,
        "rows": rows,
        "ratios": ratios,
    }
    write_results(args.json, result)
    return 0


def _quantile(xs: list[float], q: float) -> float:
    ys = sorted(xs)
    pos = q * (len(ys) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ys) - 1)
    return ys[lo] + (ys[hi] - ys[lo]) * (pos - lo)


def interleaved_main(
    args: argparse.Namespace, sizes: list[int], cases: dict, bw: dict, limit
) -> int:
    """The --interleaved mode: one process per size and workload; see the module docstring."""
    rows, ratios = [], []
    print(
        f"interleaved: {args.rounds} rounds, {args.sleep:g} s sleep + {args.warm_steps}"
        " untimed step(s) before each timed step, order rotated"
    )
    for n in sizes:
        for workload, impls in cases.items():
            impls = [i for i in impls if i not in BANDWIDTH_KERNELS] + list(BANDWIDTH_KERNELS)
            worker = f"interleaved:{workload}:{','.join(impls)}"
            res = spawn(
                worker, n, args.rounds, args.timeout * len(impls), args.sleep, args.warm_steps
            )
            if not res.get("ok"):
                print(f"  {workload:8s} {fmt_n(n):>5s} failed: {res.get('error')}")
                continue
            for impl, reason in res["skipped"].items():
                print(f"  {workload:8s} {fmt_n(n):>5s} {impl:20s} skipped: {reason}")
            times = res["seconds"]
            bw_runs = {k: times.pop(k) for k in BANDWIDTH_KERNELS if k in times}
            bw_here = {
                k: statistics.median(n * BANDWIDTH_KERNELS[k] / t / 1e9 for t in ts)
                for k, ts in bw_runs.items()
            }
            if bw_here:
                limit = max(bw_here.values())
                print(
                    f"  {workload:8s} {fmt_n(n):>5s} in-place bandwidth in the same rounds: "
                    + ", ".join(f"{k[3:]} {v:.1f} GB/s" for k, v in bw_here.items()),
                    flush=True,
                )
                rows.append({"workload": workload, "n": n, "impl": "bandwidth", "gbps": bw_here})
            for impl, ts in times.items():
                med = statistics.median(ts)
                spread = (_quantile(ts, 0.9) - _quantile(ts, 0.1)) / med
                rate = n / med
                row = {
                    "workload": workload,
                    "n": n,
                    "impl": impl,
                    "seconds": ts,
                    "median_s": med,
                    "best_s": min(ts),
                    "p10_p90_spread": spread,
                    "params_per_s": rate,
                    "effective_gbps": rate * NOMINAL_BYTES / 1e9,
                    "fraction_of_bandwidth": rate * NOMINAL_BYTES / 1e9 / limit,
                }
                rows.append(row)
                print(
                    f"  {workload:8s} {fmt_n(n):>5s} {impl:20s} {med * 1e3:9.1f} ms"
                    f" {rate / 1e9:6.3f} G params/s {row['effective_gbps']:6.1f} GB/s"
                    f" ({row['fraction_of_bandwidth']:.0%} of {limit:.1f});"
                    f" p10-p90 spread {spread:.0%}",
                    flush=True,
                )
            ours = times.get("tiermem")
            if not ours:
                continue
            honest = NOMINAL_BYTES + (2 if workload == "offload" else 0)
            ours_rate = n / statistics.median(ours)
            entry = {
                "workload": workload,
                "n": n,
                "bandwidth_limit_gbps": limit,
                "fraction_of_bandwidth_nominal": ours_rate * NOMINAL_BYTES / 1e9 / limit,
                "honest_bytes_per_param": honest,
                "fraction_of_bandwidth_honest": ours_rate * honest / 1e9 / limit,
            }
            parts = []
            for impl, ts in times.items():
                if impl == "tiermem":
                    continue
                per_round = [t / o for o, t in zip(ours, ts, strict=True)]
                entry[f"vs_{impl}"] = statistics.median(ts) / statistics.median(ours)
                entry[f"vs_{impl}_per_round_median"] = statistics.median(per_round)
                entry[f"vs_{impl}_per_round_p10_p90"] = [
                    _quantile(per_round, 0.1),
                    _quantile(per_round, 0.9),
                ]
                lo, hi = entry[f"vs_{impl}_per_round_p10_p90"]
                mid = entry[f"vs_{impl}_per_round_median"]
                parts.append(
                    f"{impl} {entry[f'vs_{impl}']:.3f}x"
                    f" (per round {mid:.3f}x, p10-p90 {lo:.2f}-{hi:.2f})"
                )
            for impl in COMPACT:
                if impl in times:  # params/s relative to fp32 states (target >= 0.9)
                    entry[f"{impl}_throughput_vs_fp32"] = 1.0 / entry[f"vs_{impl}"]
                    parts.append(
                        f"{impl} throughput {1.0 / entry[f'vs_{impl}']:.3f}x of fp32 states"
                    )
            ratios.append(entry)
            print(f"  -> {workload} {fmt_n(n)}: tiermem vs " + "; ".join(parts), flush=True)
            print(
                f"  -> {workload} {fmt_n(n)}: tiermem at"
                f" {entry['fraction_of_bandwidth_nominal']:.0%} of {limit:.1f} GB/s"
                f" ({NOMINAL_BYTES} B/param), {entry['fraction_of_bandwidth_honest']:.0%}"
                f" at {honest} B/param",
                flush=True,
            )

    result = {
        "mode": "interleaved",
        "rounds": args.rounds,
        "sleep_s": args.sleep,
        "warm_steps": args.warm_steps,
        "machine": {
            **machine_info(),
            "bandwidth_gbps": bw.get("gbps"),
            "bandwidth_limit_gbps": limit,
        },
        "nominal_bytes_per_param": NOMINAL_BYTES,
        "rows": rows,
        "ratios": ratios,
    }
    write_results(args.json, result)
    return 0


def summarize(rows: list[dict], sizes: list[int], limit: float) -> list[dict]:
    """tiermem against each peer, per size and workload; printed and returned."""
    by = {(r["workload"], r["n"], r["impl"]): r for r in rows}
    out = []
    print("\nratios (tiermem params/s over peer params/s; >1 is faster):")
    for n in sizes:
        for workload, impls in CASES.items():
            ours = by.get((workload, n, "tiermem"))
            if not ours:
                continue
            entry = {"workload": workload, "n": n}
            for impl in impls[1:]:
                peer = by.get((workload, n, impl))
                if peer:
                    entry[f"vs_{impl}"] = ours["params_per_s"] / peer["params_per_s"]
            # honest bytes: with skip_on_overflow the gradient is pre-scanned
            # (read twice when a thread's chunk exceeds its cache): 30 B, not 28
            honest = NOMINAL_BYTES + (2 if workload == "offload" else 0)
            entry["honest_bytes_per_param"] = honest
            entry["fraction_of_bandwidth_honest"] = ours["params_per_s"] * honest / 1e9 / limit
            out.append(entry)
            text = ", ".join(f"{k[3:]} {v:.2f}x" for k, v in entry.items() if k.startswith("vs_"))
            print(
                f"  {workload:8s} {fmt_n(n):>5s}: {text}; "
                f"{entry['fraction_of_bandwidth_honest']:.0%} of bandwidth at {honest} B/param"
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
