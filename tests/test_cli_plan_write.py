"""`tiermem plan --write FILE`: saves the recommended config atomically, never over a file
unless --force."""

from __future__ import annotations

import json

from tiermem import cli
from tiermem.engine.config import parse_config


def run(capsys, *argv):
    rc = cli.main(["plan", "--model", "tiny", "--no-measure", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_write_saves_the_printed_config(tmp_path, capsys):
    target = tmp_path / "ds_config.json"
    rc, out, err = run(capsys, "--json", "--write", str(target), "--nvme-path", str(tmp_path))
    assert rc == 0, err
    saved = json.loads(target.read_text())
    assert saved == json.loads(out)["config"]
    assert parse_config(str(target)).train_micro_batch_size_per_gpu == 1
    assert f"wrote {target}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds_config.json"]  # no temp file left


def test_write_refuses_an_existing_file_unless_forced(tmp_path, capsys):
    target = tmp_path / "ds_config.json"
    target.write_text("precious")
    rc, _, err = run(capsys, "--write", str(target))
    assert rc == 2
    assert err.strip().splitlines() == [
        f"tiermem plan: --write: {target} exists (--force replaces it)"
    ]
    assert target.read_text() == "precious"
    rc, _, _ = run(capsys, "--write", str(target), "--force", "--micro-batch", "3")
    assert rc == 0
    assert json.loads(target.read_text())["train_micro_batch_size_per_gpu"] == 3


def test_write_into_a_missing_directory_is_a_usage_error(tmp_path, capsys):
    rc, _, err = run(capsys, "--write", str(tmp_path / "no" / "ds.json"))
    assert rc == 2
    assert "no directory" in err and len(err.strip().splitlines()) == 1


def test_nothing_written_when_nothing_fits(tmp_path, capsys):
    target = tmp_path / "ds.json"
    rc = cli.main(
        ["plan", "--params", "1e15", "--hidden", "65536", "--layers", "2", "--no-measure",
         "--write", str(target)]
    )  # fmt: skip
    capsys.readouterr()
    assert rc == 1
    assert not target.exists()
