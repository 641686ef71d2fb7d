"""Timing a save and a load, and tearing an engine down, for the cost benches in bench/."""

from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path

from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint


def time_save_and_load(engine, ckpt: Path) -> dict[str, float]:
    """Seconds to ``save_checkpoint`` ``engine`` into ``ckpt`` and load it back."""
    t0 = time.perf_counter()
    save_checkpoint(engine, ckpt)
    saved = time.perf_counter()
    load_checkpoint(engine, ckpt)
    return {"save": saved - t0, "load": time.perf_counter() - saved}


def tear_down(engine, work: Path) -> None:
    """Close ``engine``, collect what it held and remove its scratch folder ``work``."""
    engine.close()
    gc.collect()
    shutil.rmtree(work, ignore_errors=True)
