"""Run a small GPT through tiermem.initialize and a few steps; print what each tier really holds.

Used by tests/test_plan_predictions.py in a fresh process (so RSS growth is this
run's alone): ``python tests/plan_observe.py PLACEMENT NVME_DIR HIDDEN LAYERS SEQ MICRO``.
Prints one JSON object: the planner's inputs, the bytes of the engine's own
tensors by item, the store's tier usage, and the RSS before building the
model and the peak after the steps.
"""

from __future__ import annotations

import json
import sys

import psutil
import torch

import tiermem
from tiermem.planning import Placement, PlanSettings, gpt_shape, plan, recommended_config
from tiermem.planning.machine import MachineFacts
from tiermem.store import TierKind
from tiermem.train.models import GPT, GPTConfig

VOCAB = 256


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _warm_up(config: dict) -> None:
    """One step of a very small model with the same config, so the baseline RSS includes
    what any run has: the engine's imports, the native library, its I/O threads."""
    model = GPT(GPTConfig(vocab_size=VOCAB, hidden_size=32, num_layers=1, num_heads=4, seq_len=16))
    engine, _, _, _ = tiermem.initialize(model=model, config=config)
    idx = torch.randint(0, VOCAB, (2, 17))
    engine.backward(engine(idx[:, :-1], idx[:, 1:]))
    engine.step()
    engine.close()


def _vm_hwm() -> int:
    """The process's peak RSS since the last reset of clear_refs, in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def settings_for(hidden: int, micro: int, placement: Placement) -> PlanSettings:
    """The planner settings of an observed run (fp32 on the CPU, every group through the
    placement as ``tiermem train`` does: persistence threshold 0, prefetch 2h^2)."""
    return PlanSettings(
        micro_batch_size=micro,
        dtype_bytes=4,
        param_persistence_threshold=0,
        prefetch_bucket_size=2 * hidden * hidden,
        placements=(placement,),
    )


def observe(
    placement: Placement,
    nvme_dir: str,
    *,
    hidden: int,
    layers: int,
    seq: int,
    micro: int,
    warm: bool = True,
    steps: int = 3,
) -> dict:
    """Initialize the GPT of this shape with the config the planner writes for
    ``placement``, run ``steps`` steps, and report the bytes observed."""
    torch.manual_seed(0)
    shape = gpt_shape(
        name="observed", vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, seq_len=seq
    )
    machine = MachineFacts(host_bytes=1 << 40, nvme_path=nvme_dir, nvme_free_bytes=1 << 40)
    config = recommended_config(plan(shape, machine, settings_for(hidden, micro, placement)))
    config["optimizer"] = {"type": "AdamW", "params": {"lr": 1e-3}}
    proc = psutil.Process()
    if warm:
        _warm_up(config)
    # [Note: the lifetime peak (ru_maxrss) may lie in the imports or the
    #  warm-up, above anything the run does: in the full suite it did, and the
    #  "growth" came out the same 348 MiB for every placement. Writing 5 to
    #  clear_refs resets VmHWM to the current RSS, so the peak is the run's.]
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    rss_before = proc.memory_info().rss
    model = GPT(
        GPTConfig(vocab_size=VOCAB, hidden_size=hidden, num_layers=layers, num_heads=4, seq_len=seq)
    )
    engine, _, _, _ = tiermem.initialize(model=model, config=config)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        if step == 1:  # the first step records the schedule; count the ones after it
            for store in engine.placements.stores:
                store.telemetry.reset()
        idx = torch.randint(0, VOCAB, (micro, seq + 1), generator=gen)
        loss = engine(idx[:, :-1], idx[:, 1:])
        engine.backward(loss)
        engine.step()
    rss_after = proc.memory_info().rss
    peak = _vm_hwm()
    observed: dict[str, int] = {}
    home = engine.home
    if home is not None and hasattr(home, "_shards"):
        observed["parameter shards"] = _nbytes(home._shards.values())
    opt = engine.shard_optimizer
    if hasattr(opt, "_states"):
        observed["fp32 master + Adam moments"] = _nbytes(t for s in opt._states.values() for t in s)
    grads = engine.placements.grad_accumulators
    if hasattr(grads, "tensors"):
        observed["fp32 gradient accumulators"] = _nbytes(grads.tensors.values())
    store_stats = {}
    for store in engine.placements.stores:
        moved = store.telemetry.snapshot()["bytes_moved"]
        store_stats = {
            "host": store.tier(TierKind.HOST).stats(),
            "nvme": store.tier(TierKind.NVME).stats(),
            "nvme_read_per_step": moved.get("nvme->host", 0) / max(steps - 1, 1),
            "nvme_write_per_step": moved.get("host->nvme", 0) / max(steps - 1, 1),
        }
    engine.close()
    return {
        "placement": placement.name,
        "observed": observed,
        "store": store_stats,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "rss_peak": peak,
    }


def main() -> None:
    placement = Placement[sys.argv[1]]
    hidden, layers, seq, micro = (int(x) for x in sys.argv[3:7])
    torch.set_num_threads(1)
    result = observe(placement, sys.argv[2], hidden=hidden, layers=layers, seq=seq, micro=micro)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
