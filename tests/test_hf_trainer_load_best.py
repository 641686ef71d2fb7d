"""``load_best_model_at_end`` restores the best checkpoint's engine state (stage 3), not the
empty parameter placeholders a plain ``load_state_dict`` would see; rotation keeps it only."""

from __future__ import annotations

import torch
from hf_helpers import dataset, tiny_model, training_args
from safetensors.torch import load_file

from tiermem.hf import TiermemTrainer


def test_best_checkpoint_is_loaded_into_the_engine(tmp_path):
    args = training_args(
        tmp_path,
        max_steps=6,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="loss",
        greater_is_better=True,  # the loss falls, so "best" is the first checkpoint
    )
    trainer = TiermemTrainer(
        model=tiny_model(),
        args=args,
        train_dataset=dataset(),
        eval_dataset=dataset()[:8],
        tiermem_config={"zero_optimization": {"stage": 3}},
    )
    trainer.train()
    best = tmp_path / "checkpoint-2"
    assert trainer.state.best_model_checkpoint == str(best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]  # limit 1: best only
    assert trainer.engine.global_steps == 2
    weights = trainer.engine.full_state_dict()
    saved = load_file(best / "model.safetensors")
    assert saved and all(torch.equal(t, weights[name]) for name, t in saved.items())
