"""A training script the torchrun tests launch as users do: ``torchrun --nproc_per_node 2 ...``.

The tiny GPT of :mod:`zero_helpers` at ZeRO stage 3 with parameters and Adam
states on NVMe under ``--swap`` (each rank in its own subdirectory). The global
batch is :data:`zero_helpers.BATCH` sequences per step whatever the world
size: each rank trains on its slice of every batch, so one process and two
give the same losses. Rank 0 writes the rank-averaged loss of each step to
``--out`` (JSON). ``run`` is also called in-process by the tests (one rank).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from zero_helpers import BATCH, make_batches, make_model, nvme_offload_config

SCRIPT = Path(__file__).resolve()
LAUNCH_TIMEOUT_S = 240  # a bound on a launch that hangs, far above its time on a busy machine


def _launch_env(timeout_s: float = 60) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TIERMEM_DIST_TIMEOUT": str(timeout_s)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def torchrun(
    *args: str, launcher: tuple[str, ...] = ("--standalone", "--nproc_per_node", "2"), **kw
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run LAUNCHER ARGS`` (ARGS: a script or ``-m module``),
    its output captured; a hang fails the test by ``subprocess.TimeoutExpired``."""
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *launcher, *args],
        capture_output=True,
        text=True,
        env=_launch_env(),
        timeout=kw.pop("timeout", LAUNCH_TIMEOUT_S),
        **kw,
    )


def torchrun_node(
    node: int, port: int, *args: str, output: Path, timeout_s: float = 60
) -> subprocess.Popen:
    """Node ``node`` of 2 in torchrun's multi-node form (one rank per node, rendezvous at
    127.0.0.1:``port``), started in the background; stdout and stderr go to ``output``.
    ``timeout_s``: the process group's timeout (``TIERMEM_DIST_TIMEOUT``)."""
    launcher = ["--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1"]
    launcher += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    with open(output, "w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", *launcher, *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=_launch_env(timeout_s),
        )


def stop_nodes(nodes: list[subprocess.Popen]) -> None:
    """End the agents still running, and their workers: SIGTERM makes torchrun stop its
    workers (each in a session of its own, so a SIGKILL of the agent would orphan them)."""
    for proc in nodes:
        if proc.poll() is None:
            proc.terminate()
    for proc in nodes:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(
    *,
    steps: int,
    swap: str,
    save: str | None = None,
    resume: str | None = None,
    die_at: int | None = None,
    hang_at: int | None = None,
) -> list[float]:
    """Train up to ``steps`` steps; the rank-averaged losses of the steps run here."""
    import tiermem

    world = int(os.environ.get("WORLD_SIZE", "1") or "1")
    cfg = nvme_offload_config(swap)
    cfg["train_micro_batch_size_per_gpu"] = BATCH // world
    engine, _, _, _ = tiermem.initialize(model=make_model(), config=cfg)
    rank, per = engine.comm.rank, BATCH // world
    start = 0
    if resume is not None:
        _, client = engine.load_checkpoint(resume)
        start = int(client["step"])
    losses = []
    for step, (idx, tgt) in enumerate(make_batches(steps)):
        if step < start:
            continue
        if die_at is not None and rank == 1 and step == die_at:
            sys.stderr.write(f"rank 1: dying on purpose at step {step}\n")
            sys.stderr.flush()
            os._exit(3)
        if hang_at is not None and rank == 1 and step == hang_at:
            sys.stderr.write(f"rank 1: hanging on purpose at step {step}\n")
            sys.stderr.flush()
            time.sleep(3600)
        loss = engine(idx[rank * per : (rank + 1) * per], tgt[rank * per : (rank + 1) * per])
        engine.backward(loss)
        engine.step()
        losses.append(engine.comm.all_reduce_scalar(float(loss.detach())) / world)
    if save is not None:
        engine.save_checkpoint(save, tag=f"step{steps}", client_state={"step": steps})
    engine.close()
    return losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--swap", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--save", default=None)
    parser.add_argument("--resume", default=None)
    parser.add_argument("--die-at", type=int, default=None)
    parser.add_argument("--hang-at", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    losses = run(
        steps=args.steps,
        swap=args.swap,
        save=args.save,
        resume=args.resume,
        die_at=args.die_at,
        hang_at=args.hang_at,
    )
    rank = dist.get_rank() if dist.is_initialized() else 0
    if rank == 0 and args.out:
        with open(args.out, "w") as fh:
            json.dump(losses, fh)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
