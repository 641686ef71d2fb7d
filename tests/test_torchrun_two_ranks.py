"""`torchrun --nproc_per_node 2` on a stage 3 NVMe script gives the losses of one process."""

from __future__ import annotations

import json

from torchrun_script import SCRIPT, run, torchrun
from zero_helpers import max_rel_diff

STEPS = 8


def test_two_ranks_under_torchrun_match_one_process(tmp_path):
    proc = torchrun(
        str(SCRIPT), "--steps", str(STEPS), "--swap", str(tmp_path / "swap"),
        "--out", str(tmp_path / "two.json"), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    # each rank paged its shards through its own swap subdirectory
    assert sorted(p.name for p in (tmp_path / "swap").iterdir()) == [
        "tiermem_rank0",
        "tiermem_rank1",
    ]
    one = run(steps=STEPS, swap=str(tmp_path / "swap1"))
    assert len(two) == STEPS and one[-1] < one[0]  # it trained
    # half-batch gradients averaged over ranks round differently from the whole batch
    assert max_rel_diff(two, one) <= 1e-5, (two, one)
