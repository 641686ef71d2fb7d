"""A checkpoint that cannot be written: the summary is printed, then exit 1 with one line."""

from __future__ import annotations

import errno

from tiermem.cli import main
from tiermem.engine.engine import TiermemEngine


def _disk_full(self, save_dir, tag=None, client_state=None):
    raise OSError(errno.ENOSPC, "No space left on device", str(save_dir))


def test_failed_save_exits_1_after_the_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(TiermemEngine, "save_checkpoint", _disk_full)
    rc = main(["train", "--model", "tiny", "--steps", "2"])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "2 steps in" in out
    assert "checkpoint skipped: failed: [Errno 28] No space left on device" in out
    last = err.strip().splitlines()[-1]
    assert last.startswith("tiermem train: checkpoint failed: [Errno 28]")
    assert list(tmp_path.iterdir()) == []  # the scratch directory is removed all the same
