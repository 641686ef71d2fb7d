"""`tiermem train --config` with a bad config: exit 2, one line naming the file and the key."""

from __future__ import annotations

import json

import pytest

from tiermem.cli import UsageError, main
from tiermem.engine.config import ConfigError

CASES = {
    "bad-stage": ({"zero_optimization": {"stage": 7}}, "zero_optimization.stage"),
    "unknown-key": ({"zero_optimization": {"stagee": 3}}, "zero_optimization"),
    "bad-lr": (
        {"optimizer": {"type": "AdamW", "params": {"lr": "fast"}}},
        "optimizer.params.lr",
    ),
    "not-json": ("{ not json", "invalid JSON"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_config_names_the_field(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    content, expected = CASES[name]
    path = tmp_path / "ds_config.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    rc = main(["train", "--model", "tiny", "--steps", "2", "--config", str(path)])
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert expected in err and str(path) in err
    # the scratch directory made before the config was read is gone again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds_config.json"]


def test_debug_raises_with_the_config_error_as_cause(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "ds_config.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 7}}))
    with pytest.raises(UsageError) as exc:
        main(["--debug", "train", "--model", "tiny", "--config", str(path)])
    assert isinstance(exc.value.__cause__, ConfigError)
    assert exc.value.__cause__.path == "zero_optimization.stage"
