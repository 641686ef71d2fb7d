"""`tiermem train --json`: stdout is one JSON document of the run (schema tiermem.train/1)."""

from __future__ import annotations

import json

from tiermem.cli import main
from tiermem.train.report import SCHEMA


def test_json_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--model", "tiny", "--steps", "3", "--seed", "7", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["schema"] == SCHEMA
    assert doc["model"]["preset"] == "tiny" and doc["model"]["parameters"] > 100_000
    assert doc["steps"] == {"start": 0, "end": 3, "requested": 3, "run": 3}
    assert doc["offload"] == {"stage": 3, "param": "nvme", "optimizer": "nvme"}
    assert doc["loss"]["first"] > 4.0  # about ln(256) = 5.5 for an untrained byte model
    assert doc["tokens_per_second"] > 0
    # the store wrote the parameters and optimizer states to the swap files
    assert doc["io"]["bytes_moved"].get("host->nvme", 0) > 0
    assert doc["scratch"]["removed"] is True
    assert doc["config"]["zero_optimization"]["offload_param"]["device"] == "nvme"
    assert "history" not in doc  # the per-step history goes to --report's run.json
