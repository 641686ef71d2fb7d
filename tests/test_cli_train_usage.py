"""`tiermem train` with bad arguments: exit 2 and one line on stderr, before any training."""

from __future__ import annotations

import pytest

from tiermem.cli import main

CASES = {
    "steps-zero": (["--steps", "0"], "--steps"),
    "steps-word": (["--steps", "many"], "--steps"),
    "seed-negative": (["--seed", "-1"], "--seed"),
    "unknown-model": (["--model", "huge"], "--model"),
    "unknown-option": (["--stepz", "3"], "--stepz"),
    "resume-without-checkpoint": (["--resume", "--no-checkpoint"], "--resume"),
    "nvme-path-missing": (["--nvme-path", "{tmp}/absent"], "--nvme-path"),
    "config-missing": (["--config", "{tmp}/absent.json"], "--config"),
    "report-is-file": (["--report", "{tmp}/file"], "--report"),
    "checkpoint-dir-is-file": (["--checkpoint-dir", "{tmp}/file"], "--checkpoint-dir"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_arguments_exit_2_with_one_line(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    argv, option = CASES[name]
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    rc = main(["train", *argv])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert option in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing was started


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--steps", "--config", "--nvme-path", "--resume", "--report"):
        assert option in out
