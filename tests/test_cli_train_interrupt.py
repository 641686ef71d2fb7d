"""Ctrl-C during `tiermem train`: exit 130, a summary of the steps done, scratch removed."""

from __future__ import annotations

import os
import signal

import tiermem.train.loop as loop
from tiermem.cli import main


def test_interrupt_removes_scratch_and_summarises(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real = loop.batch_for_step

    def interrupted_at_step_3(corpus, *, step, **kw):
        if step == 2:
            raise KeyboardInterrupt
        return real(corpus, step=step, **kw)

    monkeypatch.setattr(loop, "batch_for_step", interrupted_at_step_3)
    rc = main(["train", "--model", "tiny", "--steps", "10"])
    out, err = capsys.readouterr()
    assert rc == 130
    assert "2 steps in" in out and "(interrupted)" in out
    assert "checkpoint skipped: interrupted" in out
    assert err.strip().splitlines()[-1] == "tiermem: interrupted"
    assert list(tmp_path.iterdir()) == []  # no scratch, no checkpoint


def test_first_ctrl_c_finishes_the_step_and_saves(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    real = loop.batch_for_step

    def ctrl_c_during_step_2(corpus, *, step, **kw):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(corpus, step=step, **kw)

    monkeypatch.setattr(loop, "batch_for_step", ctrl_c_during_step_2)
    rc = main(["train", "--model", "tiny", "--steps", "10"])
    out, err = capsys.readouterr()
    assert rc == 130
    assert "stopping after this step" in err
    assert "2 steps in" in out and "(interrupted)" in out
    assert "checkpoint tiermem-checkpoints/step2" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiermem-checkpoints"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
