"""`tiermem train --keep` leaves the scratch directory (empty of swap files) in place."""

from __future__ import annotations

from tiermem.cli import main


def test_keep_leaves_scratch_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--model", "tiny", "--steps", "2", "--keep", "--no-checkpoint"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("tiermem-train-")]
    assert len(kept) == 1 and kept[0].is_dir()
    assert f"{kept[0]} (kept)" in out
    # nothing but the scratch directory appeared in the current directory
    assert sorted(p.name for p in tmp_path.iterdir()) == [kept[0].name]
