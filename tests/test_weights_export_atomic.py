"""A failed export leaves nothing under OUT and no temporary (file and folder), an existing
OUT is refused without force and survives a failed forced export, and force replaces it."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file
from zero_helpers import config, make_model

import tiermem
from tiermem.engine import weights_export
from tiermem.engine.weights_export import export_weights


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    engine, *_ = tiermem.initialize(model=make_model(), config=config(stage=1))
    engine.save_checkpoint(root)
    engine.close()
    return root


def _fail_on_third(monkeypatch):
    original, calls = weights_export._assemble, []

    def assemble(readers, item):
        calls.append(item.name)
        if len(calls) == 3:
            raise OSError(28, "No space left on device (injected)")
        return original(readers, item)

    monkeypatch.setattr(weights_export, "_assemble", assemble)


@pytest.mark.parametrize("hf", [False, True])
def test_failure_leaves_nothing(tmp_path, ckpt, monkeypatch, hf):
    if hf:  # a folder needs a model config; the failure comes before it matters
        monkeypatch.setattr(weights_export, "read_manifest", _with_config)
    _fail_on_third(monkeypatch)
    with pytest.raises(OSError, match="injected"):
        export_weights(ckpt, tmp_path / "out", hf=hf)
    assert list(tmp_path.iterdir()) == []


def _with_config(path):
    from tiermem.engine.checkpoint_format import read_manifest

    manifest = read_manifest(path)
    manifest["model_config"] = {"model_type": "x"}
    return manifest


def test_existing_output_refused_kept_and_replaced(tmp_path, ckpt, monkeypatch):
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"model\.safetensors: exists; pass force=True"):
        export_weights(ckpt, out)
    assert out.read_bytes() == b"precious"

    with monkeypatch.context() as m:
        _fail_on_third(m)
        with pytest.raises(OSError, match="injected"):
            export_weights(ckpt, out, force=True)
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]

    export_weights(ckpt, out, force=True)
    assert "wte.weight" in load_file(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
