"""A checkpoint written by 2 torchrun ranks resumes in 1 process on the same trajectory."""

from __future__ import annotations

import json

from torchrun_script import SCRIPT, run, torchrun
from zero_helpers import max_rel_diff

STEPS, SAVED_AT = 8, 4


def test_two_rank_checkpoint_resumes_in_one_process(tmp_path):
    ckpt = tmp_path / "ckpt"
    proc = torchrun(
        str(SCRIPT), "--steps", str(SAVED_AT), "--swap", str(tmp_path / "swap"),
        "--out", str(tmp_path / "two.json"), "--save", str(ckpt), cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = sorted(p.name for p in (ckpt / f"step{SAVED_AT}").glob("rank*.safetensors"))
    assert saved == ["rank00000.safetensors", "rank00001.safetensors"]  # written by 2 ranks
    resumed = run(steps=STEPS, swap=str(tmp_path / "swap1"), resume=str(ckpt))
    whole = run(steps=STEPS, swap=str(tmp_path / "swap2"))
    assert len(resumed) == STEPS - SAVED_AT
    two = json.loads((tmp_path / "two.json").read_text())
    assert max_rel_diff(two, whole[:SAVED_AT]) <= 1e-5, (two, whole)
    assert max_rel_diff(resumed, whole[SAVED_AT:]) <= 1e-5, (resumed, whole)
