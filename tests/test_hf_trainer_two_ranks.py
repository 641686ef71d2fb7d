"""Two gloo ranks: TiermemTrainer at stage 3 (states in host memory) gives the plain Trainer's
losses under DDP (relative difference <= 1e-5), the model is never DDP-wrapped, the engine
spans both ranks, and a resume from a checkpoint both ranks saved gives the same losses."""

from __future__ import annotations

import os

from hf_helpers import dataset, losses, max_rel_diff, tiermem_trainer, tiny_model, training_args
from zero_helpers import run_ranks

STEPS = 4


def _train(rank: int, world: int, tmp: str) -> dict:
    from transformers import Trainer

    plain = Trainer(
        model=tiny_model(),
        args=training_args(os.path.join(tmp, "plain"), max_steps=STEPS),
        train_dataset=dataset(),
    )
    plain.train()
    cfg = {"zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"}}}
    run = tiermem_trainer(
        os.path.join(tmp, "run"), cfg, max_steps=STEPS, save_strategy="steps", save_steps=2
    )
    run.train()
    resumed = tiermem_trainer(os.path.join(tmp, "resumed"), cfg, max_steps=STEPS)
    resumed.train(resume_from_checkpoint=os.path.join(tmp, "run", "checkpoint-2"))
    return {
        "plain": losses(plain),
        "plain_wrapper": type(plain.model_wrapped).__name__,
        "tiermem": losses(run),
        "tiermem_wrapper": type(run.model_wrapped).__name__,
        "engine_world": run.engine.comm.world_size,
        "resumed": losses(resumed),
    }


def test_two_ranks_match_plain_ddp_and_resume(tmp_path):
    ranks = run_ranks(_train, str(tmp_path))
    for out in ranks:
        assert out["plain_wrapper"] == "DistributedDataParallel"  # the reference is real DDP
        assert out["tiermem_wrapper"] == "_ManagedModel" and out["engine_world"] == 2
        assert len(out["tiermem"]) == STEPS
        assert max_rel_diff(out["tiermem"], out["plain"]) <= 1e-5
        assert out["resumed"][2:] == out["tiermem"][2:]
    assert ranks[0]["tiermem"] == ranks[1]["tiermem"]  # the logged loss is the ranks' mean
