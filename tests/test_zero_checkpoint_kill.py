"""kill -9 during a save, at every stage of it, leaves the previous checkpoint loadable and
``latest`` naming a complete checkpoint; the next save clears the leftovers.

A subprocess loads checkpoint ``A`` (step 1), trains a step and saves; the
``TIERMEM_CHECKPOINT_PAUSE_AT`` test hook stops it at one stage, where this
test SIGKILLs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint
from tiermem.engine.checkpoint_format import PAUSE_ENV, read_latest

TESTS = Path(__file__).parent
CFG = config(stage=3, offload="cpu", offload_param="cpu")

SAVER = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
import tiermem
from test_zero_checkpoint_kill import CFG
from zero_helpers import make_batches, make_model
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint
engine, *_ = tiermem.initialize(model=make_model(seed=5), config=CFG)
load_checkpoint(engine, {root!r})
idx, tgt = make_batches(2)[1]
engine.backward(engine(idx, tgt))
engine.step()
save_checkpoint(engine, {root!r}, tag={tag!r})
print("finished without pausing")
"""

# (stage the saver is killed at, tag it saves, what `latest` names afterwards, does B exist)
CASES = [
    ("tensors", "B", "A", False),  # a rank file half written
    ("staged", "B", "A", False),  # tensor files and manifest fsynced, not yet renamed
    ("renamed", "B", "A", True),  # renamed into place, latest not yet updated
    ("latest", "B", "B", True),  # latest updated
    ("renamed", "A", "A", False),  # overwriting A: swapped, the old copy not yet removed
]


def _state(engine) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in engine.full_state_dict().items()}


def test_kill_at_every_stage_leaves_a_loadable_checkpoint(tmp_path):
    engine, *_ = tiermem.initialize(model=make_model(), config=CFG)
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()
    base = tmp_path / "base"
    save_checkpoint(engine, base, tag="A")
    state_a = _state(engine)

    procs = []
    for i, (stage, tag, _, _) in enumerate(CASES):
        root = tmp_path / f"case{i}"
        shutil.copytree(base, root)
        marker = tmp_path / f"marker{i}"
        env = dict(os.environ, **{PAUSE_ENV: f"{stage}:{marker}"})
        script = SAVER.format(tests=str(TESTS), root=str(root), tag=tag)
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append((proc, marker))
    for proc, marker in procs:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate()
        assert alive and marker.exists(), f"the saver did not pause: {out} {err[-2000:]}"

    for i, (stage, tag, latest, b_exists) in enumerate(CASES):
        root = tmp_path / f"case{i}"
        what = f"killed at {stage!r} saving {tag!r}"
        assert read_latest(root) == latest, what
        assert (root / "B").is_dir() == b_exists, what
        path, _ = load_checkpoint(engine, root)  # verifies every file's CRC32C
        assert path == root / latest, what
        overwritten = tag == "A" and stage == "renamed"
        if latest == "A" and not overwritten:
            assert engine.global_steps == 1, what
            assert all(torch.equal(v, state_a[k]) for k, v in _state(engine).items()), what
        else:
            assert engine.global_steps == 2, what  # the new checkpoint, complete
        if b_exists:
            load_checkpoint(engine, root, tag="B")
            assert engine.global_steps == 2, what
        save_checkpoint(engine, root, tag="C")  # clears what the killed save left
        assert not [p.name for p in root.iterdir() if p.name.startswith(".")], what
    engine.close()
