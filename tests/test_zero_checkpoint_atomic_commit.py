"""The commit protocol: staging directory renamed into place, ``latest`` replaced last,
overwrites swapped atomically, leftovers of interrupted saves cleaned, manifests self-checked."""

from __future__ import annotations

import json

import pytest

from tiermem.engine.checkpoint_format import (
    STAGING_MARKER,
    CheckpointCorruptError,
    commit_staging,
    prepare_staging,
    read_latest,
    read_manifest,
    resolve_checkpoint,
    validate_tag,
    write_manifest,
)


def _save(root, tag, payload):
    stage = prepare_staging(root, tag)
    (stage / "data").write_text(payload)
    write_manifest(stage, {"payload": payload, "x": 0.1 + 0.2})
    return commit_staging(root, tag)


def test_commit_renames_and_points_latest(tmp_path):
    path = _save(tmp_path, "step1", "one")
    assert path == tmp_path / "step1" and read_latest(tmp_path) == "step1"
    assert read_manifest(path)["x"] == 0.1 + 0.2  # floats round-trip exactly
    _save(tmp_path, "step2", "two")
    assert read_latest(tmp_path) == "step2"
    assert resolve_checkpoint(tmp_path, None) == tmp_path / "step2"
    assert (tmp_path / "step1" / "data").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step1", "step2"]


def test_overwriting_a_tag_replaces_it_whole(tmp_path):
    _save(tmp_path, "t", "old")
    (tmp_path / "t" / "only-in-old").write_text("x")
    _save(tmp_path, "t", "new")
    assert (tmp_path / "t" / "data").read_text() == "new"
    assert not (tmp_path / "t" / "only-in-old").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "t"]


def test_leftovers_of_interrupted_saves_are_removed(tmp_path):
    _save(tmp_path, "a", "a")
    (tmp_path / ".b.tmp").mkdir()
    (tmp_path / ".b.tmp" / STAGING_MARKER).write_text("")  # made by prepare_staging
    (tmp_path / ".b.tmp" / "rank00000.safetensors").write_bytes(b"partial")
    (tmp_path / ".latest.tmp").write_text("b")
    _save(tmp_path, "c", "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c", "latest"]


def test_interrupted_overwrite_without_renameat2_falls_back_to_old_copy(tmp_path):
    _save(tmp_path, "t", "old")
    (tmp_path / "t").rename(tmp_path / ".t.old")  # killed between the two renames
    assert resolve_checkpoint(tmp_path, None) == tmp_path / ".t.old"


def test_manifest_edits_and_bad_latest_are_named(tmp_path):
    path = _save(tmp_path, "s", "p")
    doc = json.loads((path / "manifest.json").read_text())
    doc["manifest"]["payload"] = "q"
    (path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointCorruptError, match="manifest.json: checksum mismatch"):
        read_manifest(path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointCorruptError, match="manifest.json: not a tiermem manifest"):
        read_manifest(path)
    (tmp_path / "latest").write_text("../etc")
    with pytest.raises(CheckpointCorruptError, match="latest: '../etc' is not a tag"):
        read_latest(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        resolve_checkpoint(tmp_path, "missing")


@pytest.mark.parametrize("tag", ["", ".hidden", "a/b", "latest", "x" * 201, "-rf", None, 3])
def test_bad_tags_are_refused(tag):
    with pytest.raises(ValueError, match="tag: expected"):
        validate_tag(tag)
