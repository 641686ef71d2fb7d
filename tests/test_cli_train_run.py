"""`tiermem train` with a tiny step count: summary, progress lines, exit 0, scratch removed."""

from __future__ import annotations

from tiermem.cli import main


def test_train_runs_prints_summary_and_removes_scratch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    scratch_parent = tmp_path / "nvme"
    scratch_parent.mkdir()
    rc = main(["train", "--model", "tiny", "--steps", "4", "--nvme-path", str(scratch_parent)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    heads = [line.split()[0] for line in lines]
    for head in ("model", "data", "offload", "loss", "speed", "I/O", "stalls", "checkpoint"):
        assert head in heads, (head, out)
    assert "parameters on nvme, optimizer states on nvme" in out
    assert "4 steps in" in out
    # progress goes to stderr, one line per step for a 4-step run off a terminal
    progress = [line for line in err.splitlines() if line.startswith("step ")]
    assert [p.split()[1] for p in progress] == ["1/4", "2/4", "3/4", "4/4"]
    assert all("loss" in p and "tok/s" in p and "stall" in p for p in progress)
    # the scratch directory was made under --nvme-path and is gone
    assert list(scratch_parent.iterdir()) == []
    scratch_line = next(line for line in lines if line.startswith("scratch"))
    assert str(scratch_parent) in scratch_line and scratch_line.endswith("(removed)")
