"""`tiermem train`'s global batch: every split over ranks and accumulation sees the same sequences,
and --batch-size / --grad-accum set train_batch_size / gradient_accumulation_steps."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tiermem.cli import main
from tiermem.train.corpus import batch_for_step, load_corpus
from tiermem.train.run_config import RunShape, build_run_config

SHAPE = dict(steps=10, micro_batch_size=8, lr=1e-3, scratch=Path("/scratch"), hidden_size=64)


def _global_batch(corpus, *, micro: int, accumulation: int, world: int) -> torch.Tensor:
    parts = [
        batch_for_step(
            corpus, step=3, micro=m, batch_size=micro, seq_len=16, seed=7,
            accumulation=accumulation, rank=r, world_size=world,
        )[0]
        for m in range(accumulation)
        for r in range(world)
    ]  # fmt: skip
    return torch.cat(parts)


def test_every_split_of_the_global_batch_sees_the_same_sequences():
    corpus = load_corpus(64 << 10)
    whole = _global_batch(corpus, micro=8, accumulation=1, world=1)
    assert torch.equal(_global_batch(corpus, micro=4, accumulation=1, world=2), whole)
    assert torch.equal(_global_batch(corpus, micro=4, accumulation=2, world=1), whole)
    assert torch.equal(_global_batch(corpus, micro=2, accumulation=2, world=2), whole)
    rank1 = batch_for_step(corpus, step=3, micro=0, batch_size=4, seq_len=16, seed=7,
                           rank=1, world_size=2)[0]  # fmt: skip
    assert not torch.equal(rank1, whole[:4])  # the ranks train on different halves


def test_batch_size_and_accumulation_set_the_config(tmp_path):
    cfg = build_run_config(RunShape(**SHAPE, batch_size=16, accumulation=2))
    sizes = cfg.resolve_batch_sizes(2)
    assert (sizes.train_batch_size, sizes.micro_batch_size) == (16, 4)
    assert sizes.gradient_accumulation_steps == 2
    default = build_run_config(RunShape(**SHAPE)).resolve_batch_sizes(2)
    assert (default.train_batch_size, default.micro_batch_size) == (16, 8)  # 8 per rank
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_batch_size": 64, "gradient_accumulation_steps": 4}))
    replaced = build_run_config(RunShape(**SHAPE, batch_size=8), config_file=path)
    assert (replaced.train_batch_size, replaced.gradient_accumulation_steps) == (8, 4)


def test_batch_size_not_divisible_is_a_usage_error(capsys):
    rc = main(
        ["train", "--model", "tiny", "--steps", "1", "--batch-size", "6", "--grad-accum", "4"]
    )
    assert rc == 2
    assert capsys.readouterr().err.strip() == (
        "tiermem train: --batch-size 6 is not a multiple of --grad-accum (4)"
    )
