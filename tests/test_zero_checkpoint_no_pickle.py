"""A checkpoint holds no pickle: safetensors files (loadable by the safetensors library, with
pure-JSON headers), a JSON manifest and a one-line ``latest``; and nothing in tiermem calls
``torch.load`` without ``weights_only=True`` or imports pickle."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from safetensors.torch import load_file
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PICKLE_MARKS = [bytes([0x80, proto]) for proto in range(2, 6)] + [b"cnumpy", b"ctorch", b"\x95"]


def test_checkpoint_files_are_json_and_safetensors_only(tmp_path):
    cfg = config(stage=3)
    nvme = {"device": "nvme", "nvme_path": str(tmp_path / "swap"), "buffer_count": 1}
    cfg["zero_optimization"].update(
        offload_param=nvme, offload_optimizer=nvme, sub_group_size=500, sub_group_split_params=True
    )
    engine, *_ = tiermem.initialize(model=make_model(), config=cfg)
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()
    path = save_checkpoint(engine, tmp_path / "ckpt", client_state={"note": "hello"})
    engine.close()

    files = sorted(p.relative_to(tmp_path / "ckpt").as_posix() for p in path.parent.rglob("*"))
    assert files == [
        "global_step1",
        *(f"global_step1/{n}" for n in ("manifest.json", "rank00000.safetensors")),
        "latest",
    ]
    assert (path.parent / "latest").read_bytes() == b"global_step1\n"
    manifest_raw = (path / "manifest.json").read_bytes()
    manifest = json.loads(manifest_raw)["manifest"]
    assert manifest["client_state"] == {"note": "hello"}
    tensors = load_file(path / "rank00000.safetensors")
    assert len(tensors) > 4 * len(manifest["params"])  # split 500-element sub-groups cut params
    raw = (path / "rank00000.safetensors").read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + hlen])
    assert set(header) - {"__metadata__"} == set(tensors)
    for blob in (manifest_raw, raw[: 8 + hlen], (path.parent / "latest").read_bytes()):
        assert not any(mark in blob for mark in PICKLE_MARKS)


def _call_text(text: str, open_paren: int) -> str:
    """The text of a call from its opening parenthesis to the matching closing one."""
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren : i + 1]
    return text[open_paren:]


def test_no_unsafe_torch_load_or_pickle_in_the_package():
    offenders = []
    for src in [*(ROOT / "tiermem").rglob("*.py"), *(ROOT / "engine").rglob("*.py")]:
        text = src.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = _call_text(text, match.end() - 1)
            if "weights_only=True" not in call:
                offenders.append(f"{src.relative_to(ROOT)}: {call}")
        if re.search(r"^\s*(import pickle|from pickle import|import dill)", text, re.M):
            offenders.append(f"{src.relative_to(ROOT)}: imports pickle")
    assert offenders == []
