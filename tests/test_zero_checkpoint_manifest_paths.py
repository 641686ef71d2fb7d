"""File names in a checkpoint manifest cannot point outside the checkpoint.

The manifest's CRC has no secret, so a shared checkpoint can be rewritten to
name ``../x.safetensors`` (another checkpoint's tensors), ``/dev/zero``, a
symlink or a FIFO. Loading and exporting it is a clear error naming the
manifest and the entry, nothing is loaded, and nothing blocks (each case runs
under an alarm)."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch
from zero_helpers import config, make_model

import tiermem
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint
from tiermem.engine.checkpoint_format import CheckpointError, read_manifest, write_manifest
from tiermem.engine.weights_export import export_weights

GOOD = "rank00000.safetensors"


def _rename_entry(ckpt, new: str) -> None:
    """Rewrite the manifest (with a valid CRC) so it calls the rank file ``new``."""
    body = read_manifest(ckpt)
    body["files"] = {new: body["files"][GOOD]}
    for info in body["params"].values():
        for pieces in info["pieces"].values():
            for piece in pieces:
                piece[0] = new
    for info in body["buffers"].values():
        info["file"] = new
    write_manifest(ckpt, body)


def _symlink(ckpt, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.copy(ckpt / GOOD, outside)  # same bytes: only the link itself is wrong
    (ckpt / GOOD).unlink()
    (ckpt / GOOD).symlink_to(outside)


def _fifo(ckpt, tmp_path):
    (ckpt / GOOD).unlink()
    os.mkfifo(ckpt / GOOD)


CASES = {
    "parent": (lambda ckpt, tmp: _rename_entry(ckpt, "../other/rank00000.safetensors"), "../"),
    "dotdot": (lambda ckpt, tmp: _rename_entry(ckpt, "..rank00000.safetensors"), "..rank"),
    "absolute": (lambda ckpt, tmp: _rename_entry(ckpt, "/dev/zero"), "/dev/zero"),
    "symlink": (_symlink, "symbolic link"),
    "fifo": (_fifo, "FIFO"),
}


class _Alarm(Exception):
    pass


@pytest.fixture
def alarm():
    def ring(*_):
        raise _Alarm("blocked for 30 s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("saved")
    engine, *_ = tiermem.initialize(model=make_model(seed=3), config=config(stage=3))
    try:
        save_checkpoint(engine, root, tag="t")
        # a second checkpoint beside it, the target of "../other/..."
        shutil.copytree(root / "t", root / "other")
    finally:
        engine.close()
    return root


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("verify", [True, False])
def test_load_refuses_a_manifest_entry_outside_the_checkpoint(saved, tmp_path, alarm, case, verify):
    root = tmp_path / "ckpt"
    shutil.copytree(saved / "t", root / "t")
    shutil.copytree(saved / "other", root / "other")
    damage, expected = CASES[case]
    damage(root / "t", tmp_path)
    engine, *_ = tiermem.initialize(model=make_model(seed=9), config=config(stage=3))
    try:
        before = {k: v.clone() for k, v in engine.full_state_dict().items()}
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(engine, root, tag="t", verify=verify)
        message = str(info.value)
        assert str(root / "t" / "manifest.json") in message, message
        assert expected in message and "files entry" in message, message
        after = engine.full_state_dict()
        assert all(torch.equal(v, before[k]) for k, v in after.items())  # nothing loaded
        assert engine.global_steps == 0
    finally:
        engine.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_export_refuses_a_manifest_entry_outside_the_checkpoint(saved, tmp_path, alarm, case):
    root = tmp_path / "ckpt"
    shutil.copytree(saved / "t", root / "t")
    shutil.copytree(saved / "other", root / "other")
    damage, expected = CASES[case]
    damage(root / "t", tmp_path)
    for verify in (True, False):
        with pytest.raises(CheckpointError) as info:
            export_weights(root / "t", tmp_path / "out.safetensors", verify=verify)
        message = str(info.value)
        assert str(root / "t" / "manifest.json") in message, message
        assert expected in message and "files entry" in message, message
        assert not (tmp_path / "out.safetensors").exists()
