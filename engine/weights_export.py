"""Export a checkpoint's weights: one safetensors file, or a Hugging Face model folder.

``export_weights(checkpoint, out)`` reads a tiermem checkpoint
(:mod:`tiermem.engine.checkpoint`) and writes its model weights, whole
parameters by name, the way ``model.state_dict()`` names them:

* a single safetensors file (``hf=False``); or
* a folder like ``save_pretrained`` writes (``hf=True``): ``config.json``
  (the model's config, recorded in the manifest when the model had
  ``.config.to_dict()``) and ``model.safetensors``, or shards
  ``model-0000i-of-0000n.safetensors`` with ``model.safetensors.index.json``
  when the weights exceed ``max_shard_size``.

``tiermem export CHECKPOINT OUT`` is the command-line form.

[Note: bounded memory. The checkpoint holds every parameter as element
ranges spread over the rank files. The output's header (names, dtypes,
shapes) is known from the manifest, so each file is written header first
and then one parameter at a time: the parameter is assembled from its
ranges (``pread`` of exactly those bytes, in pieces of at most
``CHUNK_ELEMENTS`` when the dtype changes), appended, and dropped. The
most an export holds is one parameter plus one chunk, whatever the model's
size.]

[Note: tied weights are written once, under the name of the module that
registers the parameter first (``wte.weight``, not ``lm_head.weight``), as
``save_pretrained`` does and as the checkpoint stores them. A plain
``model.load_state_dict(file)`` then reports the tied alias as missing;
``strict=False`` or :func:`tiermem.engine.weights_import.load_weights`
(which resolves aliases) loads it.]

[Note: atomic output. Everything is written under a temporary name in the
output's directory (``.NAME.tmp<pid>``), fsynced, then renamed over
``out``; an existing ``out`` is refused unless ``force``, and then moved
aside before the rename and removed after it, so a failure leaves either
the old output or the new one, never a half-written file under ``out``.]
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tiermem.durable import fsync_dir

# [Note: the checkpoint loader's range reader (_fill over _Readers) and its choice of
#  param vs fp32 master (_param_source), reused so export and load read alike.]
from tiermem.engine.checkpoint import _fill, _param_source, _Readers, _write_json_synced
from tiermem.engine.checkpoint_format import (
    CheckpointError,
    SafetensorsWriter,
    TensorEntry,
    dtype_from_name,
    read_manifest,
    resolve_checkpoint,
    verify_files,
)
from tiermem.engine.checkpoint_state import CHUNK_ELEMENTS

__all__ = ["EXPORT_DTYPES", "ExportError", "ExportResult", "export_weights"]

#: ``--dtype`` names
EXPORT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
HF_WEIGHTS = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
HF_CONFIG = "config.json"


class ExportError(CheckpointError):
    """Weights cannot be exported as asked (names the file)."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: Path
    files: tuple[str, ...]  # names inside ``path`` (hf) or ``path``'s own name
    tensors: int
    nbytes: int  # bytes of tensor data
    dtype: str  # "fp32", "bf16", "fp16" or "as saved"


@dataclass(frozen=True)
class _Item:
    """One output tensor and where its values come from."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    param: dict[str, Any] | None  # the manifest's params entry (None: a buffer)
    buffer: dict[str, Any] | None

    @property
    def entry(self) -> TensorEntry:
        return TensorEntry(self.name, self.dtype, self.shape)


def _items(manifest: dict[str, Any], dtype: torch.dtype | None, where: str) -> list[_Item]:
    items = []
    for name, info in manifest["params"].items():
        stored = dtype_from_name(info["dtype"], where=where)
        items.append(_Item(name, tuple(info["shape"]), dtype or stored, info, None))
    for name, info in manifest.get("buffers", {}).items():
        stored = dtype_from_name(info["dtype"], where=where)
        out = dtype if dtype is not None and stored.is_floating_point else stored
        items.append(_Item(name, tuple(info["shape"]), out, None, info))
    return sorted(items, key=lambda it: it.name)


def _assemble(readers: _Readers, item: _Item) -> torch.Tensor:
    """The whole tensor ``item``, read from the rank files range by range."""
    numel = item.entry.numel
    out = torch.empty(numel, dtype=item.dtype)
    if item.buffer is not None:
        readers.get(item.buffer["file"]).read_into(item.buffer["key"], out)
        return out.view(item.shape)
    kind = _param_source(item.param, item.dtype)
    for a in range(0, numel, CHUNK_ELEMENTS):
        b = min(numel, a + CHUNK_ELEMENTS)
        _fill(readers, item.param, item.name, kind, a, out[a:b])
    return out.view(item.shape)


def _shards(items: list[_Item], max_bytes: int | None) -> list[list[_Item]]:
    """Split ``items`` in order into files of at most ``max_bytes`` (a larger tensor alone)."""
    if not max_bytes:
        return [items]
    shards: list[list[_Item]] = [[]]
    size = 0
    for item in items:
        n = item.entry.nbytes
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += n
    return shards


def _write_file(path: Path, readers: _Readers, items: list[_Item]) -> None:
    with SafetensorsWriter(path, [it.entry for it in items], metadata={"format": "pt"}) as w:
        for item in items:
            w.write(item.name, _assemble(readers, item))
        w.close()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _publish(tmp: Path, out: Path, *, force: bool) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` (``force`` only) is moved aside first."""
    aside = None
    if out.exists() or out.is_symlink():
        if not force:
            raise FileExistsError(f"{out}: exists; pass force=True (--force) to replace it")
        aside = out.parent / f".{out.name}.old{os.getpid()}"
        _remove(aside)
        os.rename(out, aside)
    os.rename(tmp, out)
    fsync_dir(out.parent)
    if aside is not None:
        _remove(aside)


def export_weights(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    tag: str | None = None,
    hf: bool = False,
    dtype: str | None = None,
    max_shard_size: int | None = None,
    force: bool = False,
    verify: bool = True,
) -> ExportResult:
    """Write the weights of a tiermem checkpoint to ``out``; see the module docstring.

    ``checkpoint`` is a save directory (``tag``, or ``latest``'s tag) or a
    checkpoint directory itself. ``dtype`` (``fp32``/``bf16``/``fp16``,
    default: as saved) converts parameters and floating buffers; fp32 from a
    bf16/fp16 checkpoint takes the fp32 master weights. ``max_shard_size``
    (bytes, ``hf`` only) splits the weights into several files. ``verify``
    checks every rank file's size and CRC32C first. Raises
    :class:`ExportError` (or ``FileNotFoundError``/``FileExistsError``)
    naming the file.
    """
    out = Path(out)
    if dtype is not None and dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(EXPORT_DTYPES)}, got {dtype!r}")
    if max_shard_size is not None and not hf:
        raise ValueError("max_shard_size: only a Hugging Face folder (hf=True) is sharded")
    if max_shard_size is not None and max_shard_size <= 0:
        raise ValueError(f"max_shard_size: expected a positive byte count, got {max_shard_size}")
    if (out.exists() or out.is_symlink()) and not force:
        raise FileExistsError(f"{out}: exists; pass force=True (--force) to replace it")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"{out.parent}: no such directory (the parent of {out.name})")
    if not Path(checkpoint).is_dir():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint directory")
    path = resolve_checkpoint(checkpoint, tag)
    manifest = read_manifest(path)
    if verify:
        bad = verify_files(path, manifest["files"])
        if bad:
            raise ExportError("corrupt checkpoint: " + "; ".join(bad[n] for n in sorted(bad)))
    model_config = manifest.get("model_config")
    if hf and model_config is None:
        raise ExportError(
            f"{path / 'manifest.json'}: no model config recorded (the model had no "
            ".config.to_dict(), so it is not a transformers model); export a plain "
            "safetensors file instead (without --hf)"
        )
    items = _items(manifest, EXPORT_DTYPES.get(dtype or ""), str(path / "manifest.json"))
    shards = _shards(items, max_shard_size if hf else None)
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    _remove(tmp)
    readers = _Readers(path, manifest["files"])
    try:
        if not hf:
            _write_file(tmp, readers, items)
            names: tuple[str, ...] = (out.name,)
        else:
            tmp.mkdir()
            n = len(shards)
            names = tuple(
                HF_WEIGHTS if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
                for i in range(n)
            )
            for name, shard in zip(names, shards, strict=True):
                _write_file(tmp / name, readers, shard)
            if n > 1:
                weight_map = {
                    it.name: file for file, shard in zip(names, shards, strict=True) for it in shard
                }
                total = sum(it.entry.nbytes for it in items)
                index = {"metadata": {"total_size": total}, "weight_map": weight_map}
                _write_json_synced(tmp / HF_INDEX, index, indent=2)
                names += (HF_INDEX,)
            config = dict(model_config)
            if dtype is not None:  # transformers >= 4.56 says "dtype", older "torch_dtype"
                key = "dtype" if "dtype" in config else "torch_dtype"
                config[key] = str(EXPORT_DTYPES[dtype]).removeprefix("torch.")
            _write_json_synced(tmp / HF_CONFIG, config, indent=2)
            names += (HF_CONFIG,)
            fsync_dir(tmp)
        _publish(tmp, out, force=force)
    finally:
        readers.close()
        _remove(tmp)
    return ExportResult(
        path=out,
        files=names,
        tensors=len(items),
        nbytes=sum(it.entry.nbytes for it in items),
        dtype=dtype or "as saved",
    )
