"""Cost per tensor and per piece: build, step, save and load at growing counts.

A stage 3 engine with parameters and optimizer states on NVMe is built over a
model of many small modules, each with one parameter cut into
``--pieces-per-param`` optimizer sub-groups (``sub_group_split_params``), so
``items`` optimizer pieces (store tensors and checkpoint pieces) come with
``items / pieces-per-param`` parameter groups (more store tensors). At each
size the script times:

- ``build``: ``tiermem.initialize`` (partition, register every tensor);
- ``step``: one forward, backward and optimizer step after a first step (the
  first records the store's access schedule; the timed one replays it);
- ``save``: ``save_checkpoint``;
- ``load``: ``load_checkpoint`` of that checkpoint (with verification).

It prints the time per item at each size and, per phase, the ratio of the
per-item time at the largest size to that at the smallest: a path whose cost
grows faster than n log n in the number of tensors shows as a ratio well above
1 (the target is below 2). The JSON (``--out``) carries the numbers and the
machine's load average.

Usage::

    .venv/bin/python bench/scaling.py                          # 1k, 10k, 100k
    .venv/bin/python bench/scaling.py --sizes 1000,4000 --profile 4000
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import tiermem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _checkpoint_timing import tear_down, time_save_and_load  # noqa: E402
from _results import machine_info, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PHASES = ("build", "step", "save", "load")


class Leaf(nn.Module):
    """One module with one parameter: one engine parameter group."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(numel) * 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.weight * x).sum()


class Leaves(nn.Module):
    """``count`` leaves, summed."""

    def __init__(self, count: int, numel: int) -> None:
        super().__init__()
        self.leaves = nn.ModuleList(Leaf(numel) for _ in range(count))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for leaf in self.leaves:
            total = total + leaf(x)
        return total


def engine_config(swap: Path, piece: int) -> dict:
    """Stage 3, fp32, parameters and optimizer states on NVMe, ``piece``-element sub-groups."""
    nvme = {"device": "nvme", "nvme_path": str(swap)}
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {
            "stage": 3,
            "offload_param": nvme,
            "offload_optimizer": dict(nvme),
            "sub_group_size": piece,
            "sub_group_split_params": True,
            "stage3_param_persistence_threshold": 0,
            "stage3_prefetch_bucket_size": 0,
        },
    }


def run_size(items: int, per_param: int, piece: int, scratch: Path) -> dict[str, float]:
    """Seconds of each phase for ``items`` optimizer pieces."""
    torch.manual_seed(0)
    work = scratch / f"n{items}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    numel = piece * per_param
    model = Leaves(items // per_param, numel)
    x = torch.randn(numel)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    engine, *_ = tiermem.initialize(model=model, config=engine_config(work / "swap", piece))
    out["build"] = time.perf_counter() - t0
    try:
        for phase in ("warmup", "step"):
            t0 = time.perf_counter()
            engine.backward(engine(x))
            engine.step()
            if phase == "step":
                out["step"] = time.perf_counter() - t0
        out.update(time_save_and_load(engine, work / "ckpt"))
    finally:
        del model
        tear_down(engine, work)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="optimizer pieces per run")
    ap.add_argument("--pieces-per-param", type=int, default=4)
    ap.add_argument("--piece", type=int, default=64, help="elements per piece (sub_group_size)")
    ap.add_argument("--dir", default=None, help="scratch directory (default: under the repo)")
    ap.add_argument("--profile", type=int, default=None, help="cProfile the run of this size")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "scaling.json"))
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    scratch = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(dir=REPO, prefix=".scaling."))
    rows = {}
    try:
        run_size(4 * args.pieces_per_param, args.pieces_per_param, args.piece, scratch)  # warm-up
        for n in sizes:
            if n == args.profile:
                prof = cProfile.Profile()
                times = prof.runcall(run_size, n, args.pieces_per_param, args.piece, scratch)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            else:
                times = run_size(n, args.pieces_per_param, args.piece, scratch)
            rows[n] = times
            per = "  ".join(f"{p} {times[p] / n * 1e6:8.1f} us" for p in PHASES)
            print(f"{n:>7} pieces ({n // args.pieces_per_param} groups): {per}", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    lo, hi = min(rows), max(rows)
    ratios = {p: (rows[hi][p] / hi) / (rows[lo][p] / lo) for p in PHASES}
    print(f"per-item time ratio {hi}/{lo}: " + "  ".join(f"{p} {r:.2f}" for p, r in ratios.items()))
    write_results(
        args.out,
        {
            "benchmark": "scaling",
            "pieces_per_param": args.pieces_per_param,
            "piece_elements": args.piece,
            "seconds": {str(n): t for n, t in rows.items()},
            "us_per_item": {str(n): {p: t[p] / n * 1e6 for p in PHASES} for n, t in rows.items()},
            "ratio_largest_to_smallest": ratios,
            "target_ratio_below": 2.0,
            "machine": machine_info(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
