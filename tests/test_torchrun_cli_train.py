"""`torchrun --nproc_per_node 2 -m tiermem.cli train`: rank 0 alone reports, and with the
same --batch-size the loss curve is that of one process (here with accumulation instead)."""

from __future__ import annotations

import json

from torchrun_script import torchrun
from zero_helpers import max_rel_diff

from tiermem.cli import main
from tiermem.engine.checkpoint_format import read_manifest

TRAIN = ["train", "--model", "tiny", "--steps", "6", "--batch-size", "8", "--json"]


def _losses(checkpoint_dir) -> list[float]:
    return read_manifest(checkpoint_dir / "step6")["client_state"]["losses"]


def test_two_ranks_report_once_and_match_one_process(tmp_path, capsys):
    two_dir, one_dir = tmp_path / "two", tmp_path / "one"
    proc = torchrun(
        "-m", "tiermem.cli", *TRAIN, "--checkpoint-dir", str(two_dir), cwd=tmp_path
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads(proc.stdout)  # one JSON document: rank 1 printed nothing
    assert two["ranks"] == {"world_size": 2, "backend": "gloo"}
    assert two["batch"] == {"global": 8, "micro": 4, "accumulation": 1}
    assert sum(line.startswith("step 1/6 ") for line in proc.stderr.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tiermem-train-")] == []

    rc = main([*TRAIN, "--grad-accum", "2", "--checkpoint-dir", str(one_dir)])
    one = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert one["batch"] == {"global": 8, "micro": 4, "accumulation": 2}
    assert max_rel_diff(_losses(two_dir), _losses(one_dir)) <= 1e-5
    assert abs(two["loss"]["last"] - one["loss"]["last"]) <= 1e-5 * one["loss"]["last"]
