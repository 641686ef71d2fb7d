"""TiermemTrainer saves through tiermem checkpoints and resumes through Trainer's
``resume_from_checkpoint``: the steps after a resume give the same losses as an uninterrupted
run (bit for bit with the same config; within 1e-5 after switching stage 3 -> stage 0), and a
checkpoint folder holds no pickle, only the engine's checkpoint, the Trainer's JSON state and
the consolidated weights."""

from __future__ import annotations

import pytest
import torch
from hf_helpers import STEPS, losses, max_rel_diff, tiermem_trainer, zero_config
from safetensors.torch import load_file

from tiermem.engine.checkpoint_format import CheckpointError
from tiermem.hf.trainer import TIERMEM_CHECKPOINT_DIR

HALF = STEPS // 2


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Stage 3, optimizer and parameters in host memory, saving every HALF steps."""
    tmp = tmp_path_factory.mktemp("hf_resume")
    out = tmp / "run"
    cfg = zero_config(tmp, stage=3, offload="cpu")
    trainer = tiermem_trainer(out, cfg, save_strategy="steps", save_steps=HALF)
    trainer.train()
    final = trainer.engine.full_state_dict()
    return out, cfg, losses(trainer), final


def test_checkpoint_folder_holds_engine_state_and_weights_no_pickle(uninterrupted):
    out, _, _, final = uninterrupted
    folder = out / f"checkpoint-{STEPS}"
    names = {p.name for p in folder.iterdir()}
    assert {TIERMEM_CHECKPOINT_DIR, "trainer_state.json", "model.safetensors"} <= names
    assert (folder / TIERMEM_CHECKPOINT_DIR / "latest").is_file()
    assert not [p for p in folder.rglob("*") if p.suffix in {".pt", ".pth", ".bin", ".pkl"}]
    # consolidated, not the empty stage 3 placeholders: equal to the engine's weights
    saved = load_file(folder / "model.safetensors")
    assert saved["transformer.wte.weight"].shape == final["transformer.wte.weight"].shape
    assert len(saved) >= 10
    for name, tensor in saved.items():
        assert torch.equal(tensor, final[name]), name


def test_resume_gives_the_uninterrupted_losses_bit_for_bit(tmp_path, uninterrupted):
    out, cfg, full, _ = uninterrupted
    trainer = tiermem_trainer(tmp_path / "resumed", cfg)
    trainer.train(resume_from_checkpoint=str(out / f"checkpoint-{HALF}"))
    assert trainer.engine.global_steps == STEPS
    resumed = losses(trainer)
    assert len(resumed) == STEPS  # the first HALF come from the checkpoint's trainer_state.json
    assert resumed[HALF:] == full[HALF:]


def test_resume_with_another_stage(tmp_path, uninterrupted):
    out, _, full, _ = uninterrupted
    trainer = tiermem_trainer(tmp_path / "resumed", zero_config(tmp_path, stage=0))
    trainer.train(resume_from_checkpoint=str(out / f"checkpoint-{HALF}"))
    assert trainer.engine.stage == 0
    assert max_rel_diff(losses(trainer)[HALF:], full[HALF:]) <= 1e-5


def test_resume_from_a_folder_without_engine_state_names_it(tmp_path):
    plain = tmp_path / "checkpoint-3"
    plain.mkdir()
    (plain / "trainer_state.json").write_text("{}")
    trainer = tiermem_trainer(tmp_path / "out", zero_config(tmp_path, stage=0))
    with pytest.raises(CheckpointError, match="not a TiermemTrainer checkpoint"):
        trainer.train(resume_from_checkpoint=str(plain))
