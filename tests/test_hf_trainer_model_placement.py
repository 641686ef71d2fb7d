"""TiermemTrainer keeps the Trainer and accelerate off the model the engine manages: it is never
moved (no ``Module.to``/``_apply`` call, which the plain Trainer makes), never handed to
``accelerator.prepare`` nor wrapped, its optimizer is the engine's, and evaluation runs through
the engine (stage 3: parameters gathered by the engine's hooks)."""

from __future__ import annotations

import math

import pytest
from hf_helpers import dataset, tiermem_trainer, tiny_model, training_args, zero_config
from torch import nn
from transformers import GPT2LMHeadModel, Trainer

from tiermem.hf import TiermemTrainer


class RecordingGPT2(GPT2LMHeadModel):
    """Counts ``_apply`` calls on the whole model (what ``.to()``, ``.cuda()``, ``.half()`` run)."""

    moved = 0

    def _apply(self, fn, recurse=True):
        RecordingGPT2.moved += 1
        return super()._apply(fn, recurse)


def test_plain_trainer_moves_the_model_so_the_recording_works(tmp_path):
    RecordingGPT2.moved = 0
    Trainer(model=tiny_model(RecordingGPT2), args=training_args(tmp_path))
    assert RecordingGPT2.moved > 0


def test_model_is_not_moved_prepared_or_wrapped(tmp_path):
    RecordingGPT2.moved = 0
    model = tiny_model(RecordingGPT2)
    trainer = TiermemTrainer(
        model=model,
        args=training_args(tmp_path / "out", max_steps=2, eval_strategy="no"),
        train_dataset=dataset(),
        eval_dataset=dataset()[:8],
        tiermem_config=zero_config(tmp_path, stage=3),
    )
    trainer.train()
    metrics = trainer.evaluate()
    assert RecordingGPT2.moved == 0
    assert trainer.accelerator._models == []  # accelerate never prepared it
    assert trainer.model is model
    managed = trainer.model_wrapped
    assert managed.engine is trainer.engine and trainer.engine.module is model
    assert not isinstance(managed, nn.Module)  # nothing can .to() or wrap it
    assert trainer._wrap_model(model, training=False) is managed
    assert trainer.optimizer is trainer.engine.optimizer  # not accelerate's AcceleratedOptimizer
    assert math.isfinite(metrics["eval_loss"])


def test_full_precision_eval_flags_are_refused(tmp_path):
    with pytest.raises(ValueError, match="bf16_full_eval"):
        tiermem_trainer(tmp_path, {}, bf16_full_eval=True)
