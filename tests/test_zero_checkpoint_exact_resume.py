"""Train 10 steps, save, start a new process, load, train 10 more: the losses equal the
uninterrupted 20-step run bit for bit (fp32 on CPU), and every rank's RNG streams continue."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from zero_helpers import config, engine_losses, make_batches, make_model

import tiermem
from tiermem.engine.checkpoint import save_checkpoint

TESTS = Path(__file__).parent
STEPS = 10


def case_config(case: str, nvme_dir: Path) -> dict:
    if case == "stage3-cpu":
        return config(stage=3, offload="cpu", offload_param="cpu")
    nvme = {"device": "nvme", "nvme_path": str(nvme_dir), "buffer_count": 1}
    cfg = config(stage=3)
    cfg["zero_optimization"].update(offload_param=nvme, offload_optimizer=nvme, sub_group_size=1000)
    return cfg


def train(engine, batches) -> list[float]:
    losses = []
    for idx, tgt in batches:
        loss = engine(idx, tgt)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    return losses


def draws() -> list[float]:
    return [torch.rand(1).item(), random.random(), float(np.random.rand())]


# the fresh process: a model from another seed, loaded, then the same draws and 10 steps
RESUME = """
import json, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
import tiermem
from test_zero_checkpoint_exact_resume import case_config, draws, make_batches, train, STEPS
from zero_helpers import make_model
from tiermem.engine.checkpoint import load_checkpoint
from pathlib import Path
cfg = case_config({case!r}, Path({nvme!r}))
engine, *_ = tiermem.initialize(model=make_model(seed=123), config=cfg)
path, client = load_checkpoint(engine, {ckpt!r})
rng = draws()
losses = train(engine, make_batches(2 * STEPS)[STEPS:])
print(json.dumps(dict(path=str(path), client=client, rng=rng, losses=losses,
                      steps=engine.global_steps)))
engine.close()
"""


@pytest.mark.parametrize("case", ["stage3-cpu", "stage3-nvme"])
def test_resume_in_a_new_process_is_bit_exact(tmp_path, case):
    cfg = case_config(case, tmp_path / "swap")
    batches = make_batches(2 * STEPS)
    engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    train(engine, batches[:STEPS])
    torch.manual_seed(7)
    random.seed(8)
    np.random.seed(9)
    save_checkpoint(engine, tmp_path / "ckpt", client_state={"epoch": 1, "next_batch": STEPS})
    expected_rng = draws()
    continued = train(engine, batches[STEPS:])
    engine.close()
    if case == "stage3-nvme":  # where a save reads through the store
        # saving in the middle changed nothing: an uninterrupted run gives the same losses
        uninterrupted = engine_losses(case_config(case, tmp_path / "swap2"), steps=2 * STEPS)
        assert uninterrupted[STEPS:] == continued

    script = RESUME.format(
        tests=str(TESTS), case=case, nvme=str(tmp_path / "swap3"), ckpt=str(tmp_path / "ckpt")
    )
    # [Note: the same thread count as this process: torch's CPU kernels may sum in a
    #  different order with another, and "bit for bit" means the same arithmetic.]
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = json.loads(out.stdout.strip().splitlines()[-1])
    assert resumed["path"] == str(tmp_path / "ckpt" / f"global_step{STEPS}")
    assert resumed["client"] == {"epoch": 1, "next_batch": STEPS}
    assert resumed["rng"] == expected_rng  # torch, python and numpy streams continue
    assert resumed["losses"] == continued  # bit for bit
    assert resumed["steps"] == 2 * STEPS
