"""Busy processes beside a benchmark case: ``bench/train.py --contend N``.

A real training box runs data loaders and tokenizers beside the step; N
pure-CPU spinners (one Python loop each, no I/O, no memory traffic to speak
of) stand in for them while a case runs, and are killed after it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

SPIN = "while True: pass"


@contextmanager
def busy_processes(n: int) -> Iterator[list[int]]:
    """``n`` spinning child processes for the duration of the block; their pids."""
    if n < 0:
        raise ValueError(f"--contend: expected a count >= 0, got {n}")
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", SPIN],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                )
            )
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
