"""One case of ``bench/train.py``, run in its own process.

``python bench/_train_case.py SPEC_JSON OUT_JSON`` trains the GPT described by
the spec for ``warmup + steps`` steps with tiermem or DeepSpeed at one
placement and writes per-step times, store telemetry (tiermem), peak RSS and
errors to ``OUT_JSON``. Every case runs in a fresh process so that one case's
RSS, page cache warmth and allocator state do not leak into the next.

Placements (the same words for both engines; ZeRO stage 3 throughout):

- ``none``: parameters and optimizer states in RAM (the compute device);
- ``cpu``: optimizer states offloaded to host memory, CPU Adam;
- ``nvme``: parameters and optimizer states offloaded to NVMe.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

MiB = 1 << 20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _proc_status() -> dict[str, int]:
    """VmHWM (peak RSS), VmRSS and VmLck (mlock'ed) of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "VmLck"):
                out[key] = int(rest.split()[0]) * 1024
    return out


class _Checkpointed(torch.nn.Module):
    """Runs ``block`` under the engine's activation checkpointing (recomputed in backward)."""

    def __init__(self, block: torch.nn.Module, checkpoint) -> None:
        super().__init__()
        self.block = block
        self._checkpoint = checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._checkpoint(self.block, x)


def _model(spec: dict) -> torch.nn.Module:
    from tiermem.train.models import GPT, GPTConfig

    m = spec["model"]
    cfg = GPTConfig(
        vocab_size=m["vocab"],
        hidden_size=m["hidden"],
        num_layers=m["layers"],
        num_heads=m["heads"],
        seq_len=m["seq"],
    )
    torch.manual_seed(0)
    return GPT(cfg)


def _batches(spec: dict, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    m = spec["model"]
    gen = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        tokens = torch.randint(0, m["vocab"], (spec["batch"], m["seq"] + 1), generator=gen)
        out.append((tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()))
    return out


def _optimizer_section() -> dict:
    return {
        "type": "AdamW",
        "params": {"lr": 1e-4, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01},
    }


def tiermem_config(spec: dict, nvme_dir: Path) -> dict:
    """The tiermem config of a case (DeepSpeed keys)."""
    where = spec["placement"]
    param = {"device": "nvme" if where == "nvme" else "none"}
    opt = {"device": where}
    if where == "nvme":
        param["nvme_path"] = opt["nvme_path"] = str(nvme_dir)
        param.update(spec.get("offload_param") or {})
        opt.update(spec.get("offload_optimizer") or {})
    zero: dict[str, Any] = {
        "stage": 3,
        "offload_param": param,
        "offload_optimizer": opt,
        "sub_group_size": spec["sub_group_size"],
    }
    zero.update(spec.get("zero_optimization") or {})
    cfg = {
        "train_micro_batch_size_per_gpu": spec["batch"],
        "gradient_accumulation_steps": 1,
        "train_batch_size": spec["batch"],
        "optimizer": _optimizer_section(),
        "bf16": {"enabled": spec["precision"] == "bf16"},
        "zero_optimization": zero,
    }
    if spec.get("aio"):
        cfg["aio"] = spec["aio"]
    if spec.get("activation_checkpointing"):
        cfg["activation_checkpointing"] = {"cpu_checkpointing": False}
    return cfg


def deepspeed_config(spec: dict, nvme_dir: Path, largest_param: int, num_params: int) -> dict:
    """The DeepSpeed config of a case.

    [Note: DeepSpeed 0.19.8's NVMe parameter offload asserts "param already
    assigned swap buffer id" unless ``stage3_prefetch_bucket_size`` is 0, and
    runs out of swap buffers with its default 5 once a module holds more
    parameters than that; the buffers are sized to the largest parameter and
    counted to hold every parameter tensor of the model, which costs RAM but
    is what makes it run.]
    """
    where = spec["placement"]
    zero: dict[str, Any] = {
        "stage": 3,
        "sub_group_size": spec["sub_group_size"],
        "stage3_param_persistence_threshold": 0,
    }
    if where == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    elif where == "nvme":
        zero["stage3_prefetch_bucket_size"] = 0
        zero["offload_optimizer"] = {
            "device": "nvme",
            "nvme_path": str(nvme_dir),
            "pin_memory": False,
            "buffer_count": 4,
        }
        zero["offload_param"] = {
            "device": "nvme",
            "nvme_path": str(nvme_dir),
            "pin_memory": False,
            "buffer_count": num_params + 2,
            "buffer_size": largest_param,
            "max_in_cpu": 0,
        }
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": spec["batch"],
        "gradient_accumulation_steps": 1,
        "train_batch_size": spec["batch"],
        "optimizer": _optimizer_section(),
        "bf16": {"enabled": spec["precision"] == "bf16"},
        "zero_optimization": zero,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if where == "none":
        # [Note: no fused Adam on DeepSpeed's CPU accelerator; torch's AdamW
        #  updates the (in-RAM) fp32 partitions.]
        cfg["optimizer"]["params"]["torch_adam"] = True
    if where == "nvme":
        cfg["aio"] = spec.get("aio") or {
            "block_size": MiB,
            "queue_depth": 16,
            "intra_op_parallelism": 1,
            "single_submit": False,
            "overlap_events": True,
        }
    return cfg


def _store_totals(stores: list) -> dict[str, Any]:
    """Bytes moved per tier pair, stall seconds and tier peaks, summed over the stores."""
    moved: dict[str, int] = {}
    stall = 0.0
    tiers: dict[str, dict[str, float]] = {}
    hits = misses = behind = at_eviction = 0
    for store in stores:
        snap = store.telemetry.snapshot()
        for pair, n in snap["bytes_moved"].items():
            moved[pair] = moved.get(pair, 0) + n
        stall += snap["stall_seconds"]
        hits += snap["prefetch_hits"]
        misses += snap["prefetch_misses"]
        behind += snap["write_behinds"]
        at_eviction += snap["eviction_writes"]
        for tier, stats in (snap.get("tiers") or {}).items():
            merged = tiers.setdefault(tier, {})
            for k, v in stats.items():
                if isinstance(v, (int, float)):
                    merged[k] = merged.get(k, 0) + v
    return {
        "bytes_moved": moved,
        "stall_seconds": stall,
        "prefetch_hits": hits,
        "prefetch_misses": misses,
        "write_behinds": behind,
        "eviction_writes": at_eviction,
        "tiers": tiers,
    }


def _delta(before: dict, after: dict) -> dict:
    moved = {
        pair: n - before["bytes_moved"].get(pair, 0) for pair, n in after["bytes_moved"].items()
    }
    return {
        "bytes_moved": moved,
        "stall_seconds": after["stall_seconds"] - before["stall_seconds"],
        "prefetch_hits": after["prefetch_hits"] - before["prefetch_hits"],
        "prefetch_misses": after["prefetch_misses"] - before["prefetch_misses"],
        # writes begun at a release (the schedule's plan) and those an eviction had to begin
        "write_behinds": after["write_behinds"] - before["write_behinds"],
        "eviction_writes": after["eviction_writes"] - before["eviction_writes"],
    }


def _timed_step(engine: Any, idx: torch.Tensor, tgt: torch.Tensor) -> tuple[float, dict, float]:
    """One training step: total seconds, seconds per phase, loss."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    loss = engine(idx, tgt)
    t1 = time.perf_counter()
    engine.backward(loss)
    t2 = time.perf_counter()
    engine.step()
    t3 = time.perf_counter()
    # "cpu": the process's CPU seconds (all threads), less bound to the machine's load
    phases = {"forward": t1 - t0, "backward": t2 - t1, "step": t3 - t2}
    phases["cpu"] = time.process_time() - c0
    return t3 - t0, phases, float(loss.detach().float())


def cap_store_host_bytes(host_bytes: int) -> None:
    """Open the engine's stores with at most ``host_bytes`` of host budget (the tight case).

    [Note: the engine sizes the store's host tier from the ZeRO buffer counts
    (tiermem.engine.placement), and its fixed shares (the prefetch room, two
    gradient accumulators of the largest shard) alone are ~30% of the 67M
    model's state, so no config gets it to the tight case's 25%. The bench
    caps the budget where the engine opens its stores instead; the store
    then evicts what does not fit, as it would on a smaller machine.]
    """
    import dataclasses

    from tiermem.engine import nvme_tiers

    opened = nvme_tiers.open_store

    def open_capped(store_spec):
        host = min(int(store_spec.host_bytes), host_bytes)
        prefetch = min(int(store_spec.prefetch_bytes), host // 2)
        return opened(dataclasses.replace(store_spec, host_bytes=host, prefetch_bytes=prefetch))

    nvme_tiers.open_store = open_capped


def run_tiermem(spec: dict, nvme_dir: Path) -> dict:
    """Train with tiermem; per-step times and store telemetry."""
    import tiermem
    from tiermem.train.loop import engine_stores

    cfg = tiermem_config(spec, nvme_dir)
    if spec.get("store_host_bytes"):
        cap_store_host_bytes(int(spec["store_host_bytes"]))
    t0 = time.perf_counter()
    if spec.get("init_context"):
        with tiermem.init_context(config=cfg):
            model = _model(spec)
    else:
        model = _model(spec)
    engine, _, _, _ = tiermem.initialize(model=model, config=cfg)
    init_seconds = time.perf_counter() - t0
    if spec.get("activation_checkpointing"):
        # [Note: wrapped after initialize(): the wrappers own no parameters, so the
        #  engine's groups and hooks (on the blocks' layers) are unchanged.]
        for i, block in enumerate(model.blocks):
            model.blocks[i] = _Checkpointed(block, engine.checkpoint)
    memory_after_init = _proc_status()
    print(f"  init {init_seconds:.1f} s, memory {memory_after_init}", file=sys.stderr)
    stores = engine_stores(engine)
    n = spec["warmup"] + spec["steps"]
    batches = _batches(spec, n)
    steps = []
    try:
        for i, (idx, tgt) in enumerate(batches):
            before = _store_totals(stores)
            # whether every store had recorded its schedule (and could replay it) when the
            # step began: the steady state starts there (a predicted order does not count)
            replayed = bool(stores) and all(
                s.schedule.usable and s.schedule.passes_recorded > 0 for s in stores
            )
            seconds, phases, loss = _timed_step(engine, idx, tgt)
            row = {"step": i, "seconds": seconds, "phases": phases, "loss": loss}
            if stores:
                row["replayed"] = replayed
            row.update(_delta(before, _store_totals(stores)))
            row["rss_bytes"] = _rss_bytes()
            row["memory"] = _proc_status()
            steps.append(row)
            print(
                f"  step {i}: {seconds:.3f} s {phases} moved {row['bytes_moved']} "
                f"memory {row['memory']}",
                file=sys.stderr,
            )
        final = _store_totals(stores)
        min_bytes = engine.min_bytes_per_step()
    finally:
        engine.close()
    return {
        "min_bytes_per_step": min_bytes,
        "init_seconds": init_seconds,
        "memory_after_init": memory_after_init,
        "steps": steps,
        "store": final,
    }


def run_deepspeed(spec: dict, nvme_dir: Path) -> dict:
    """Train with DeepSpeed ZeRO-3 (CPU accelerator, gloo, world size 1)."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(spec["port"]),
        RANK="0",
        WORLD_SIZE="1",
        LOCAL_RANK="0",
    )
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")
    model = _model(spec)
    params = list(model.parameters())
    cfg = deepspeed_config(spec, nvme_dir, max(p.numel() for p in params), len(params))
    t0 = time.perf_counter()
    engine, _, _, _ = deepspeed.initialize(model=model, model_parameters=params, config=cfg)
    init_seconds = time.perf_counter() - t0
    steps = []
    for i, (idx, tgt) in enumerate(_batches(spec, spec["warmup"] + spec["steps"])):
        seconds, phases, loss = _timed_step(engine, idx, tgt)
        steps.append(
            {
                "step": i,
                "seconds": seconds,
                "phases": phases,
                "loss": loss,
                "rss_bytes": _rss_bytes(),
            }
        )
        print(f"  step {i}: {seconds:.3f} s {phases}", file=sys.stderr)
    return {"init_seconds": init_seconds, "steps": steps, "deepspeed": deepspeed.__version__}


def main(argv: list[str]) -> int:
    """``_train_case.py SPEC_JSON OUT_JSON``; exit 0 even when the case failed (see ``error``)."""
    spec = json.loads(Path(argv[1]).read_text())
    out_path = Path(argv[2])
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    nvme_dir = Path(spec["nvme_dir"])
    nvme_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"spec": spec}
    try:
        run = run_tiermem if spec["impl"] == "tiermem" else run_deepspeed
        result.update(run(spec, nvme_dir))
    except Exception as exc:  # reported in the table, not a crash of the whole bench
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        print(result["traceback"], file=sys.stderr)
    result["peak_rss_bytes"] = _peak_rss_bytes()
    result["memory"] = _proc_status()
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
