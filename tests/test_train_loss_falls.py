"""Training the tiny preset through the engine with NVMe offload lowers the loss."""

from __future__ import annotations

from tiermem.train.loop import TrainOptions, train


def test_loss_falls_and_io_is_counted(tmp_path):
    result = train(TrainOptions(model="tiny", steps=20, nvme_path=tmp_path, checkpoint_dir=None))
    losses = [r.loss for r in result.records]
    assert len(losses) == 20 and [r.step for r in result.records] == list(range(1, 21))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert first > 5.0  # about ln(256) for an untrained byte-level model
    assert last < first - 1.0  # byte frequencies alone are worth more than a nat
    assert all(r.tokens == 8 * 64 for r in result.records)
    assert result.telemetry["bytes_moved"]["host->nvme"] > 0
    assert result.scratch_removed and list(tmp_path.iterdir()) == []
    # the LR follows the default warmup-cosine schedule: rises, then decays
    lrs = [r.lr for r in result.records]
    peak = lrs.index(max(lrs))
    assert 0 < peak < 10 and lrs[-1] < lrs[peak] / 2
