"""A save removes only the staging leftovers tiermem made (``.TAG.tmp`` holding its
marker): other programs' ``.something.tmp`` files and
directories in the same ``save_dir`` survive ``save_checkpoint``."""

from __future__ import annotations

from zero_helpers import config, make_model

import tiermem
from tiermem.engine.checkpoint import save_checkpoint

STAGING_MARKER = ".tiermem-staging"  # checkpoint_format.STAGING_MARKER, spelled out


def test_other_programs_dot_tmp_entries_survive_a_save(tmp_path):
    notes = tmp_path / ".my-notes.tmp"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    (tmp_path / ".download.tmp").write_bytes(b"half a download")
    (tmp_path / ".step9.tmp").mkdir()  # a tag-like name, but no marker: not ours
    (tmp_path / ".step9.tmp" / "data").write_text("someone's")
    # a leftover of an interrupted save (it has the marker): removed
    ours = tmp_path / ".step3.tmp"
    ours.mkdir()
    (ours / STAGING_MARKER).write_text("tiermem checkpoint staging directory\n")
    (ours / "rank00000.safetensors").write_bytes(b"partial")

    engine, *_ = tiermem.initialize(model=make_model(), config=config(stage=3))
    try:
        save_checkpoint(engine, tmp_path, tag="A")
    finally:
        engine.close()

    assert (notes / "todo.txt").read_text() == "keep me"
    assert (tmp_path / ".download.tmp").read_bytes() == b"half a download"
    assert (tmp_path / ".step9.tmp" / "data").read_text() == "someone's"
    assert not ours.exists()
    assert not (tmp_path / "A" / STAGING_MARKER).exists()  # the marker leaves with the commit
    assert (tmp_path / "latest").read_text() == "A\n"
