"""Two training processes given the same ``nvme_path`` at once do not corrupt each other:
each one's scratch store makes its own pid-named swap files (and only removes files of
dead processes), so both reproduce the run of a process alone bit for bit, and the
directory is empty once both have closed. (A persistent store is locked instead: see
test_store_two_processes.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps

import tiermem

TESTS = Path(__file__).parent
STEPS = 4

JOB = """
import json, sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
import tiermem
from test_zero_two_jobs_one_nvme_path import STEPS
from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps
engine, *_ = tiermem.initialize(model=make_model(), config=nvme_offload_config({swap!r}))
print("started", flush=True)
sys.stdin.readline()  # both are running before either trains
print(json.dumps(train_steps(engine, make_batches(STEPS))), flush=True)
engine.close()
"""


def test_two_jobs_on_one_nvme_path(tmp_path):
    swap = tmp_path / "shared"
    code = JOB.format(tests=str(TESTS), swap=str(swap))
    jobs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for job in jobs:
            assert job.stdout.readline().strip() == "started", job.stderr.read()[-3000:]
        files = sorted(p.name for p in (swap / "tiermem_rank0").iterdir())
        assert files == sorted(f"tiermem-{job.pid}-0.swap" for job in jobs)  # one each
        results = [job.communicate("go\n", timeout=300) for job in jobs]
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.communicate()
    for job, (_, err) in zip(jobs, results, strict=True):
        assert job.returncode == 0, err[-3000:]
    alone, *_ = tiermem.initialize(
        model=make_model(), config=nvme_offload_config(tmp_path / "alone")
    )
    expected = train_steps(alone, make_batches(STEPS))
    alone.close()
    for out, _ in results:
        assert json.loads(out) == expected
    assert list((swap / "tiermem_rank0").iterdir()) == []
