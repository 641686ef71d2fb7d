"""kill -9 in the middle of training, at several points of a step and of the swap
write-backs: a new process resumes from the last checkpoint that was committed and
reproduces the uninterrupted run bit for bit (fp32 on CPU, parameters and Adam states
on NVMe).

Each child process loads the checkpoint of step 2, trains step 3 and saves it, then
dies in step 4 (or in the save after it) at its kill point: a module hook for the
forward and backward passes, or ``TIERMEM_FAULTS``' ``kill`` (SIGKILL right after a
swap read or write is submitted, with the transfer in flight) armed at a chosen
moment. Kills during the save's own stages (tensors, staging, rename, latest) are
covered by test_zero_checkpoint_kill.py.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps

import tiermem
from tiermem.engine.checkpoint_format import read_latest
from tiermem.faults import FAULTS_ENV

TESTS = Path(__file__).parent
STEPS, BASE = 6, 2
# [Note: a plan that never fires: the swap files are wrapped, kills are added
#  to the live plan at the chosen moment.]
WRAP_ONLY = "delay@r1000000000:1us"


CHILD = """
import os, signal, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
import tiermem
from pathlib import Path
from test_zero_crash_resume import BASE, STEPS
from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps
from tiermem.store import TierKind

point, root, swap = sys.argv[1], sys.argv[2], Path(sys.argv[3])
engine, *_ = tiermem.initialize(model=make_model(seed=7), config=nvme_offload_config(swap))
engine.load_checkpoint(root)
batches = make_batches(STEPS)
print("loss", *train_steps(engine, batches[BASE : BASE + 1]), flush=True)
engine.save_checkpoint(root)  # step 3: the checkpoint to resume from
plan = engine.placements.stores[0].tier(TierKind.NVME).faults
model = engine.module

def die(*_):
    os.kill(os.getpid(), signal.SIGKILL)

before_step = None
if point == "forward":  # in the second block's forward
    model.blocks[1].register_forward_pre_hook(die)
elif point == "backward":  # after the second block's backward, before the first's
    def kill_in_backward(module, inputs, out):
        out.register_hook(die)

    model.blocks[0].register_forward_hook(kill_in_backward)
elif point.startswith("step:"):  # inside the optimizer step, at a swap transfer
    before_step = lambda: plan.add(point[5:])
elif point.startswith("pass:"):  # counted from the start of step 4
    plan.add(point[5:])
if not point.startswith("save:"):  # dies in step 4 (at the latest in a later one)
    train_steps(engine, batches[BASE + 1 :], before_step=before_step)
else:  # step 4 completes, the save of it dies at a swap read
    train_steps(engine, batches[BASE + 1 : BASE + 2])
    plan.add(point[5:])
    engine.save_checkpoint(root)
print("survived", flush=True)
"""

POINTS = [
    "forward",
    "backward",
    "pass:kill@w1",  # the first swap write of step 4 (a gradient write-back), in flight
    "step:kill@w1",  # in the optimizer step: a write-back of updated states, in flight
    "save:kill@r2",  # reading the states back for the step-4 checkpoint
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[float]]:
    """The checkpoint of step BASE and the losses of all STEPS, uninterrupted."""
    root = tmp_path_factory.mktemp("base")
    engine, *_ = tiermem.initialize(
        model=make_model(), config=nvme_offload_config(tmp_path_factory.mktemp("swap"))
    )
    batches = make_batches(STEPS)
    losses = train_steps(engine, batches[:BASE])
    engine.save_checkpoint(root)
    losses += train_steps(engine, batches[BASE:])
    engine.close()
    return root, losses


def test_kill_mid_step_and_mid_write_back_resumes_exactly(tmp_path, reference, monkeypatch):
    base, expected = reference
    monkeypatch.setenv(FAULTS_ENV, WRAP_ONLY)
    procs = []
    for i, point in enumerate(POINTS):
        root = tmp_path / f"ckpt{i}"
        shutil.copytree(base, root)
        cmd = [sys.executable, "-c", CHILD.format(tests=str(TESTS)), point]
        cmd += [str(root), str(tmp_path / f"swap{i}")]
        procs.append(
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    monkeypatch.delenv(FAULTS_ENV)
    for point, proc in zip(POINTS, procs, strict=True):
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == -signal.SIGKILL, f"{point}: {out} {err[-3000:]}"
        assert "survived" not in out, point
        assert out.split("\n")[0] == f"loss {expected[BASE]!r}", (point, out)

    for i, point in enumerate(POINTS):
        root, swap = tmp_path / f"ckpt{i}", tmp_path / f"swap{i}"
        assert read_latest(root) == f"global_step{BASE + 1}", point
        stale = list(swap.rglob("*.swap"))
        assert len(stale) == 1, (point, stale)  # the killed process's scratch file
        engine, *_ = tiermem.initialize(model=make_model(seed=11), config=nvme_offload_config(swap))
        assert list(swap.rglob("*.swap")) != stale, point  # removed as stale at the start
        path, _ = engine.load_checkpoint(root)
        assert engine.global_steps == BASE + 1, point
        losses = train_steps(engine, make_batches(STEPS)[BASE + 1 :])
        engine.close()
        assert losses == expected[BASE + 1 :], point
