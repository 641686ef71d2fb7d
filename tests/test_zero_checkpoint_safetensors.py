"""Checkpoint tensor files are standard safetensors: written piece by piece, read back by range,
loaded by the ``safetensors`` library, and any damage to their header is named."""

from __future__ import annotations

import struct

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tiermem.checksum import crc32c
from tiermem.engine.checkpoint_format import (
    CheckpointCorruptError,
    CheckpointError,
    SafetensorsReader,
    SafetensorsWriter,
    TensorEntry,
    file_checksum,
)


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "master:a.weight:0-37": torch.randn(37, generator=gen),
        "param:a.weight:0-37": torch.randn(37, generator=gen).to(torch.bfloat16),
        "exp_avg:b:5-9": torch.randn(4, generator=gen).to(torch.float16),
        "buffer:steps": torch.tensor(7, dtype=torch.int64),
        "buffer:mask": torch.tensor([[True, False], [False, True]]),
        "buffer:grid": torch.arange(6, dtype=torch.float64).reshape(2, 3),
    }


def _write(path, tensors):
    entries = [TensorEntry(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    with SafetensorsWriter(path, entries, metadata={"rank": 3}) as writer:
        for key, t in tensors.items():
            writer.write(key, t)
        return writer.close()


def test_library_loads_what_the_writer_streams(tmp_path):
    tensors = _tensors()
    path = tmp_path / "rank00000.safetensors"
    record = _write(path, tensors)
    loaded = load_file(path)
    assert loaded.keys() == tensors.keys()
    for key, t in tensors.items():
        assert loaded[key].dtype == t.dtype and torch.equal(loaded[key], t), key
    with safe_open(path, framework="pt") as f:
        assert f.metadata() == {"rank": "3"}
    assert record.nbytes == path.stat().st_size
    assert record.crc32c == crc32c(path.read_bytes()) == file_checksum(path)[1]


def test_reader_reads_element_ranges_with_casts(tmp_path):
    tensors = _tensors()
    path = tmp_path / "f.safetensors"
    _write(path, tensors)
    with SafetensorsReader(path) as reader:
        out = torch.empty(10)
        reader.read_into("master:a.weight:0-37", out, start=20)
        assert torch.equal(out, tensors["master:a.weight:0-37"][20:30])
        up = torch.empty(37)  # bf16 stored, fp32 wanted
        reader.read_into("param:a.weight:0-37", up)
        assert torch.equal(up, tensors["param:a.weight:0-37"].float())
        grid = torch.empty(2, 3, dtype=torch.float64)
        reader.read_into("buffer:grid", grid)
        assert torch.equal(grid, tensors["buffer:grid"])
        with pytest.raises(CheckpointCorruptError, match="no elements 30..40"):
            reader.read_into("master:a.weight:0-37", torch.empty(10), start=30)
        with pytest.raises(CheckpointCorruptError, match="no tensor 'nope'"):
            reader.read_into("nope", out)


def test_writer_refuses_out_of_order_and_missing_tensors(tmp_path):
    entries = [TensorEntry("a", torch.float32, (2,)), TensorEntry("b", torch.float32, (3,))]
    with SafetensorsWriter(tmp_path / "x.safetensors", entries) as writer:
        with pytest.raises(CheckpointError, match="expected tensor 'a'"):
            writer.write("b", torch.zeros(3))
        writer.write("a", torch.zeros(2))
        with pytest.raises(CheckpointError, match="'b' was never written"):
            writer.close()


def test_damaged_headers_are_named(tmp_path):
    path = tmp_path / "bad.safetensors"
    _write(path, _tensors())
    raw = bytearray(path.read_bytes())
    cases = {
        "truncated": bytes(raw[:-3]),
        "huge header": struct.pack("<Q", 1 << 40) + bytes(raw[8:]),
        "not json": bytes(raw[:8]) + b"\xff" * (len(raw) - 8),
        "short": b"\x01\x02",
    }
    for what, data in cases.items():
        path.write_bytes(data)
        with pytest.raises(CheckpointCorruptError, match="bad.safetensors"):
            SafetensorsReader(path)
        assert what
