"""A run stopped early and resumed from its checkpoint continues exactly as an uninterrupted run."""

from __future__ import annotations

import pytest

from tiermem.train.loop import ResumeError, TrainOptions, train


def test_resumed_losses_equal_uninterrupted(tmp_path):
    common = dict(model="tiny", nvme_path=tmp_path, seed=3)
    full = train(TrainOptions(steps=5, checkpoint_dir=None, **common))
    ckpt = tmp_path / "ckpt"
    done: list[int] = []
    first = train(
        TrainOptions(steps=5, checkpoint_dir=ckpt, **common),
        on_step=lambda r: done.append(r.step),
        should_stop=lambda: len(done) == 3,  # as a first Ctrl-C during step 3
    )
    assert first.interrupted and first.steps_run == 3
    assert first.checkpoint["saved"] and first.checkpoint["tag"] == "step3"
    resumed = train(TrainOptions(steps=5, checkpoint_dir=ckpt, resume=True, **common))
    assert resumed.start_step == 3
    assert resumed.prior_losses == [r.loss for r in first.records]
    assert [r.step for r in resumed.records] == [4, 5]
    # same weights, optimizer states, schedule and batches: the same losses
    for a, b in zip(full.records[3:], resumed.records, strict=True):
        assert b.loss == pytest.approx(a.loss, rel=1e-5, abs=0)
    assert resumed.checkpoint["tag"] == "step5"
    assert sorted(p.name for p in ckpt.iterdir()) == ["latest", "step3", "step5"]
    with pytest.raises(ResumeError, match="at step 5 already"):
        train(TrainOptions(steps=5, checkpoint_dir=ckpt, resume=True, **common))
    with pytest.raises(ResumeError, match="pass --seed 3"):
        train(TrainOptions(steps=9, checkpoint_dir=ckpt, resume=True, **{**common, "seed": 4}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # scratch dirs removed


def test_resume_without_checkpoint_names_the_directory(tmp_path):
    with pytest.raises(ResumeError, match="no 'latest' file"):
        train(
            TrainOptions(
                model="tiny", steps=2, nvme_path=tmp_path, checkpoint_dir=tmp_path, resume=True
            )
        )
