"""An engine that cannot save checkpoints: the run succeeds and says the checkpoint was skipped;
--resume fails with one line."""

from __future__ import annotations

from tiermem.cli import main
from tiermem.engine.engine import TiermemEngine


def _unavailable(self, *args, **kwargs):
    raise NotImplementedError("no checkpoints in this build")


def test_save_unavailable_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(TiermemEngine, "save_checkpoint", _unavailable)
    rc = main(["train", "--model", "tiny", "--steps", "2"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    line = next(x for x in out.splitlines() if x.startswith("checkpoint"))
    assert line == (
        "checkpoint skipped: checkpoints are unavailable in this engine: "
        "no checkpoints in this build"
    )
    assert not (tmp_path / "tiermem-checkpoints").exists()


def test_resume_unavailable_fails_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiermem-checkpoints").mkdir()
    monkeypatch.setattr(TiermemEngine, "load_checkpoint", _unavailable)
    rc = main(["train", "--model", "tiny", "--steps", "2", "--resume"])
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.strip() == (
        "tiermem train: --resume: checkpoints are unavailable in this engine: "
        "no checkpoints in this build"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiermem-checkpoints"]
