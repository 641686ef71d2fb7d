"""Shared pieces of the Hugging Face Trainer tests: a tiny GPT-2 built from a config (no
download), an in-memory dataset, TrainingArguments, and runs of the plain and tiermem Trainers.

The model: 2 layers, hidden 32, 2 heads, vocab 64, 16 positions, GPT-2's default
dropout (0.1, so the runs also depend on the RNG). Every run builds it from the
same seed, so all runs start from identical weights.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import Any

import pytest

transformers = pytest.importorskip(
    "transformers",
    reason="transformers is not installed (pip install 'tiermem[hf]'; scripts/bootstrap does)",
)

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments  # noqa: E402

from tiermem.hf import TiermemTrainer  # noqa: E402

VOCAB, HIDDEN, LAYERS, HEADS, SEQ = 64, 32, 2, 2, 16
SAMPLES = 48
MICRO, ACCUMULATION = 4, 2
STEPS = 8
LR = 3e-2  # large enough that the loss visibly falls in 8 steps


def tiny_model(cls: type = GPT2LMHeadModel) -> Any:
    """The tiny GPT-2, with the same weights every call."""
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=LAYERS,
        n_embd=HIDDEN,
        n_head=HEADS,
        vocab_size=VOCAB,
        n_positions=SEQ,
        bos_token_id=0,
        eos_token_id=0,
    )
    return cls(config)


@functools.cache
def dataset() -> list[dict[str, torch.Tensor]]:
    """Sequences with a learnable pattern (each token is the previous plus one, mod VOCAB)."""
    gen = torch.Generator().manual_seed(1)
    starts = torch.randint(0, VOCAB, (SAMPLES, 1), generator=gen)
    ids = (starts + torch.arange(SEQ)) % VOCAB
    return [{"input_ids": row.clone(), "labels": row.clone()} for row in ids]


def training_args(output_dir: str | os.PathLike, **overrides: Any) -> TrainingArguments:
    """The tests' TrainingArguments: CPU, seed 0, log every step, no saving unless asked."""
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=MICRO,
        gradient_accumulation_steps=ACCUMULATION,
        max_steps=STEPS,
        learning_rate=LR,
        warmup_steps=2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        optim="adamw_torch",
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def zero_config(tmp_path: Any, *, stage: int, offload: str = "none") -> dict[str, Any]:
    """A tiermem config (batch sizes, optimizer, clipping left to TrainingArguments)."""
    zero: dict[str, Any] = {"stage": stage}
    if offload != "none":
        where = {"device": offload}
        if offload == "nvme":
            where["nvme_path"] = str(tmp_path)
        zero["offload_optimizer"] = dict(where)
        if stage == 3:
            zero["offload_param"] = dict(where)
    return {"zero_optimization": zero}


def losses(trainer: Trainer) -> list[float]:
    """The loss logged at each step."""
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@functools.cache
def plain_losses() -> tuple[float, ...]:
    """The plain transformers Trainer's losses (no DeepSpeed, no tiermem), computed once."""
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=tiny_model(), args=training_args(out), train_dataset=dataset())
        trainer.train()
        return tuple(losses(trainer))


def tiermem_trainer(output_dir: Any, config: Any, **overrides: Any) -> TiermemTrainer:
    """A TiermemTrainer on the tiny model and dataset."""
    return TiermemTrainer(
        model=tiny_model(),
        args=training_args(output_dir, **overrides),
        train_dataset=dataset(),
        tiermem_config=config,
    )


def max_rel_diff(a: Any, b: Any) -> float:
    """The largest relative difference between two loss lists."""
    assert len(a) == len(b)
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))
