"""TiermemTrainer follows the plain transformers Trainer's loss trajectory (fp32, same seed,
gradient accumulation 2, clipping at 1.0, linear warmup/decay): stage 0 in memory and stage 3
with parameters and optimizer states on NVMe (tmp_path), relative difference <= 1e-5."""

from __future__ import annotations

import warnings

import pytest
from hf_helpers import STEPS, max_rel_diff, plain_losses, tiermem_trainer, zero_config

from tiermem.store import StoreScheduleWarning

CASES = [(0, "none"), (3, "nvme")]


@pytest.mark.parametrize("stage,offload", CASES, ids=[f"stage{s}-{o}" for s, o in CASES])
def test_losses_match_the_plain_trainer(tmp_path, stage, offload):
    reference = plain_losses()
    assert len(reference) == STEPS
    assert reference[-1] < reference[0] - 0.3  # the trajectory moves
    trainer = tiermem_trainer(tmp_path / "out", zero_config(tmp_path, stage=stage, offload=offload))
    with warnings.catch_warnings():
        # the store's recorded access schedule holds from the first window on
        warnings.simplefilter("error", StoreScheduleWarning)
        trainer.train()
    assert trainer.engine.stage == stage
    assert trainer.engine.global_steps == STEPS
    got = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert max_rel_diff(got, reference) <= 1e-5
