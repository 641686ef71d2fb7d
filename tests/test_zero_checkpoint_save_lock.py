"""Two writers into one ``save_dir``: while a save is in progress (paused by the
``TIERMEM_CHECKPOINT_PAUSE_AT`` hook in a subprocess), a second
``save_checkpoint`` fails at once with an error naming the directory, and the
first save's staging directory is left intact; once the first is gone the
directory is usable again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from zero_helpers import config, make_model

import tiermem
from tiermem.engine.checkpoint import save_checkpoint
from tiermem.engine.checkpoint_format import PAUSE_ENV, CheckpointError, read_latest

TESTS = Path(__file__).parent

SAVER = """
import sys, warnings
warnings.simplefilter("ignore")
sys.path.insert(0, {tests!r})
import tiermem
from zero_helpers import config, make_model
from tiermem.engine.checkpoint import save_checkpoint
engine, *_ = tiermem.initialize(model=make_model(seed=5), config=config(stage=3))
save_checkpoint(engine, {root!r}, tag="first")
print("finished without pausing")
"""


def test_a_second_writer_is_refused_and_the_first_staging_dir_is_kept(tmp_path):
    root = tmp_path / "ckpt"
    marker = tmp_path / "paused"
    env = dict(os.environ, **{PAUSE_ENV: f"staged:{marker}"})
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER.format(tests=str(TESTS), root=str(root))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and marker.exists(), proc.communicate()
        stage = root / ".first.tmp"
        before = sorted(p.name for p in stage.iterdir())
        assert "rank00000.safetensors" in before and "manifest.json" in before

        engine, *_ = tiermem.initialize(model=make_model(), config=config(stage=3))
        try:
            with pytest.raises(CheckpointError) as info:
                save_checkpoint(engine, root, tag="second")
            message = str(info.value)
            assert str(root) in message and "in progress" in message
            assert f"pid {proc.pid}" in message
            assert sorted(p.name for p in stage.iterdir()) == before  # untouched
            assert not (root / ".second.tmp").exists()
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        # the killed holder's lock is gone with it: the next save proceeds and
        # clears the killed save's staging directory
        try:
            save_checkpoint(engine, root, tag="second")
        finally:
            engine.close()
        assert read_latest(root) == "second"
        assert not stage.exists()
        assert not [p.name for p in root.iterdir() if p.name.startswith(".")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
