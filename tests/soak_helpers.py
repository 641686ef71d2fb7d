"""The soak run: training with NVMe budgets so small that every store tensor leaves host
memory on every step, measured step by step (RSS, open descriptors, swap bytes on disk).

Used by ``test_soak.py`` (a short run by default, 200 steps behind ``-m soak``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from torch import nn

import tiermem

WIDTH, DEPTH, CLASSES, BATCH = 64, 8, 8, 16


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + torch.tanh(layer(x))
        return F.cross_entropy(self.head(self.norm(x)), y)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(step % 16)
    return torch.randn(BATCH, WIDTH, generator=gen), torch.randint(
        0, CLASSES, (BATCH,), generator=gen
    )


def config(nvme: Path, *, tight: bool) -> dict:
    """NVMe parameters and optimizer states; ``tight``: one buffer and 256-element
    optimizer sub-groups, so the store's host budget holds a fraction of the state."""

    def offload() -> dict:
        return {"device": "nvme", "nvme_path": str(nvme), "buffer_count": 1 if tight else 64}

    return {
        "train_micro_batch_size_per_gpu": BATCH,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": 1e-2, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": 0.1},
        },
        "zero_optimization": {
            "stage": 3,
            "sub_group_size": 256 if tight else 1_000_000,
            "sub_group_split_params": tight,  # 256-element pieces, cut through parameters
            "offload_param": offload(),
            "offload_optimizer": offload(),
            "stage3_param_persistence_threshold": 0,
        },
    }


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def disk_bytes(directory: Path) -> int:
    """Bytes the files under ``directory`` occupy on disk (allocated blocks)."""
    return sum(p.lstat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


@dataclass
class SoakRecord:
    losses: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    swap_disk: list[int] = field(default_factory=list)
    swap_used: list[int] = field(default_factory=list)  # the NVMe tier's allocated extents
    reads: list[int] = field(default_factory=list)  # nvme->host bytes of each step
    reads_total: Counter[str] = field(default_factory=Counter)  # NVMe reads per tensor
    not_read: list[set[str]] = field(default_factory=list)  # tensors a step did not read
    store_names: set[str] = field(default_factory=set)
    nbytes: dict[str, int] = field(default_factory=dict)  # of each store tensor
    evictions: list[int] = field(default_factory=list)  # host evictions of each step
    store_bytes: int = 0
    store_tensors: int = 0
    host_budget: int = 0
    final: dict[str, torch.Tensor] = field(default_factory=dict)
    leftover_files: list[str] = field(default_factory=list)


def soak(nvme: Path, steps: int, *, tight: bool = True) -> SoakRecord:
    """Train ``steps`` steps and record the figures after each one."""
    proc = psutil.Process()
    rec = SoakRecord()
    engine, *_ = tiermem.initialize(model=Mlp(), config=config(nvme, tight=tight))
    store = engine.placements.stores[0]
    # [Note: the gradient accumulators (grad.*) are left out: with no clipping each group
    #  is stepped as its gradient lands in backward, so gradients go to NVMe only in the
    #  first step (the overlap starts once a step is seen to take one backward). The
    #  tensors a step reads are the parameter shards and states.]
    rec.store_names = {n for n in store.names() if not n.startswith("grad.")}
    rec.store_tensors = len(rec.store_names)
    rec.store_bytes = sum(store.info(n)["nbytes"] for n in store.names())
    rec.nbytes = {n: store.info(n)["nbytes"] for n in rec.store_names}
    before = store.telemetry.snapshot()
    try:
        for step in range(steps):
            loss = engine(*batch(step))
            engine.backward(loss)
            engine.step()
            rec.losses.append(float(loss.detach()))
            snap = store.telemetry.snapshot()
            rec.reads.append(
                snap["bytes_moved"].get("nvme->host", 0)
                - before["bytes_moved"].get("nvme->host", 0)
            )
            rec.evictions.append(snap["evictions"]["host"] - before["evictions"]["host"])
            before = snap
            events = store.telemetry.events
            read = Counter(
                name
                for track, name, *_ in events
                if track == "nvme->host" and name in rec.store_names
            )
            rec.reads_total.update(read)
            rec.not_read.append(rec.store_names - read.keys())  # kept small: RSS is measured
            # [Note: the store keeps its trace timeline (up to MAX_TRACE_EVENTS events,
            #  a few hundred bytes each) for reports; that capped record would read as
            #  growth here, so it is emptied once read and RSS measures everything else.]
            events.clear()
            rec.rss.append(proc.memory_info().rss)
            rec.fds.append(open_fds())
            rec.swap_disk.append(disk_bytes(nvme))
            rec.swap_used.append(snap["tiers"]["nvme"]["used"])
        rec.host_budget = snap["tiers"]["host"]["budget"]
        rec.final = engine.full_state_dict()
    finally:
        engine.close()
    rec.leftover_files = [str(p) for p in nvme.rglob("*") if p.is_file()]
    return rec
