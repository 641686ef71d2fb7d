"""DeepSpeed's NVMe checkpoint test config, tried as a new user would, against sub_group_size 1e9.

DeepSpeed's ZeRO-3 checkpoint unit tests run a ``SimpleModel`` (``nlayers``
square ``Linear`` layers and a cross-entropy loss) built under
``zero.Init`` with fp16, ``sub_group_size`` 100, ``stage3_max_live_parameters``
100 and parameters and optimizer states on NVMe. This script builds that model
under ``tiermem.init_context`` at ``--hidden``, and times building, one
training step (after a first one), saving and loading a checkpoint, then does
the same with ``sub_group_size`` 1e9, side by side in one process. The ratio
of each phase (100 / 1e9) should be near 1: a small ``sub_group_size`` bounds
sub-groups, it does not cut parameters (``sub_group_split_params``).

Usage::

    nice .venv/bin/python bench/ds_nvme_config.py --hidden 2048
"""

from __future__ import annotations

import argparse
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


class SimpleModel(nn.Module):
    """``nlayers`` square linear layers and a cross-entropy loss (as DeepSpeed's tests)."""

    def __init__(self, hidden: int, nlayers: int) -> None:
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(nlayers))
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for layer in self.linears:
            x = layer(x)
        return self.loss(x, y)


def ds_config(swap: Path, sub_group_size: int) -> dict:
    nvme = {"device": "nvme", "nvme_path": str(swap)}
    return {
        "train_batch_size": 2,
        "optimizer": {
            "type": "Adam",
            "params": {"lr": 1.5e-4, "betas": [0.8, 0.999], "eps": 1e-8, "weight_decay": 3e-7},
        },
        "fp16": {"enabled": True, "initial_scale_power": 8},
        "zero_optimization": {
            "stage": 3,
            "sub_group_size": sub_group_size,
            "stage3_max_live_parameters": 100,
            "offload_param": nvme,
            "offload_optimizer": dict(nvme),
        },
    }


def run(hidden: int, nlayers: int, sub_group_size: int, work: Path) -> dict[str, float]:
    torch.manual_seed(0)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cfg = ds_config(work / "swap", sub_group_size)
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    with tiermem.init_context(config=cfg):
        model = SimpleModel(hidden, nlayers)
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    out["build"] = time.perf_counter() - t0
    x = torch.randn(2, hidden, dtype=torch.float16)
    y = torch.randint(0, hidden, (2,))
    try:
        for phase in ("warmup", "step"):
            t0 = time.perf_counter()
            engine.backward(engine(x, y))
            engine.step()
            if phase == "step":
                out["step"] = time.perf_counter() - t0
        out.update(time_save_and_load(engine, work / "ckpt"))
        out["optimizer_sub_groups"] = float(
            sum(len(v) for v in getattr(engine.shard_optimizer, "_chunks", {}).values())
        )
    finally:
        del model
        tear_down(engine, work)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--nlayers", type=int, default=2)
    ap.add_argument("--dir", default=None, help="scratch directory (default: under the repo)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "ds_nvme_config.json"))
    args = ap.parse_args(argv)
    scratch = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(dir=REPO, prefix=".dsnvme."))
    rows = {}
    try:
        run(16, 1, 100, scratch / "warmup")  # first-use costs (imports, native library) left out
        for size in (100, 1_000_000_000):
            rows[size] = run(args.hidden, args.nlayers, size, scratch / f"sg{size}")
            parts = "  ".join(f"{p} {rows[size][p]:7.2f} s" for p in PHASES)
            subs = int(rows[size]["optimizer_sub_groups"])
            print(f"sub_group_size {size:>10}: {parts}  ({subs} sub-groups)", flush=True)
    finally:
        if not args.dir:
            shutil.rmtree(scratch, ignore_errors=True)
    ratios = {p: rows[100][p] / rows[1_000_000_000][p] for p in PHASES}
    print("ratio 100 / 1e9: " + "  ".join(f"{p} {r:.2f}" for p, r in ratios.items()))
    write_results(
        args.out,
        {
            "benchmark": "ds_nvme_config",
            "hidden": args.hidden,
            "nlayers": args.nlayers,
            "seconds": {str(k): v for k, v in rows.items()},
            "ratio_100_to_1e9": ratios,
            "machine": machine_info(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
