"""Read weights from files other programs wrote, one element range at a time.

:func:`open_weights` opens

* a safetensors file;
* a PyTorch state-dict file (``torch.save(model.state_dict(), f)``), loaded
  with ``torch.load(f, weights_only=True, mmap=True)``: no unpickling of
  code, and the tensors stay in the file's pages until read;
* a Hugging Face model folder: ``model.safetensors``, sharded
  ``model.safetensors.index.json``, ``pytorch_model.bin`` or sharded
  ``pytorch_model.bin.index.json``.

and returns a :class:`WeightSource`: tensor names, shapes and dtypes from
the headers, and :meth:`WeightSource.read_into`, which fills a tensor with
elements ``[start, start + n)`` of one flattened tensor.

[Note: a rank loads only the element ranges it owns. Safetensors files are
read with :class:`~tiermem.engine.checkpoint_format.SafetensorsReader`
(``pread`` of exactly those bytes; nothing is mapped or read whole). A
PyTorch file is memory-mapped, so slicing a tensor touches only the pages of
that slice. Neither ever holds a whole model in memory.]
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from tiermem.engine.checkpoint_format import CheckpointError, SafetensorsReader

__all__ = ["HF_FILES", "TensorInfo", "WeightSource", "WeightsFileError", "open_weights"]

#: what a Hugging Face folder is searched for, in this order
HF_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)


class WeightsFileError(CheckpointError):
    """A weights file cannot be read as weights (names the file)."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a source: its shape, dtype and the file it is in."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    file: Path

    @property
    def numel(self) -> int:
        """Elements."""
        return math.prod(self.shape)


class WeightSource(ABC):
    """Named tensors in one or more files, read by element range."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tensors: dict[str, TensorInfo] = {}

    @abstractmethod
    def read_into(self, key: str, out: torch.Tensor, *, start: int = 0) -> None:
        """Fill ``out`` (any dtype/device) with elements ``start..start + out.numel()`` of the
        flattened tensor ``key``."""

    def close(self) -> None:
        """Close the files."""
        return None

    def __enter__(self) -> WeightSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_range(self, key: str, start: int, n: int) -> TensorInfo:
        info = self.tensors.get(key)
        if info is None:
            raise WeightsFileError(f"{self.path}: has no tensor {key!r}")
        if start < 0 or start + n > info.numel:
            raise WeightsFileError(
                f"{info.file}: tensor {key!r} has {info.numel} elements, not {start}..{start + n}"
            )
        return info


class SafetensorsSource(WeightSource):
    """Tensors in safetensors files (one, or the shards an index names)."""

    def __init__(self, path: Path, files: list[Path]) -> None:
        super().__init__(path)
        self._readers: dict[str, SafetensorsReader] = {}
        try:
            for file in files:
                reader = SafetensorsReader(file)
                self._readers[str(file)] = reader
                for key, stored in reader.entries.items():
                    if key in self.tensors:
                        raise WeightsFileError(
                            f"{file}: tensor {key!r} is also in {self.tensors[key].file}"
                        )
                    self.tensors[key] = TensorInfo(stored.shape, stored.dtype, file)
        except BaseException:
            self.close()
            raise

    def read_into(self, key: str, out: torch.Tensor, *, start: int = 0) -> None:
        info = self._check_range(key, start, out.numel())
        self._readers[str(info.file)].read_into(key, out, start=start)

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def _state_dict_of(obj: object, file: Path) -> Mapping[str, torch.Tensor]:
    """The name -> tensor mapping in a loaded torch file (also under "state_dict"/"model")."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and inner:
                if all(isinstance(v, torch.Tensor) for v in inner.values()):
                    return inner
        bad = next((k for k, v in obj.items() if not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            raise WeightsFileError(
                f"{file}: {bad!r} is a {type(obj[bad]).__name__}, not a tensor; expected a "
                "state dict (name -> tensor), or one under 'state_dict' or 'model'"
            )
    raise WeightsFileError(
        f"{file}: holds a {type(obj).__name__}, not a state dict (name -> tensor)"
    )


class TorchFileSource(WeightSource):
    """Tensors in PyTorch state-dict files, memory-mapped."""

    def __init__(self, path: Path, files: list[Path]) -> None:
        super().__init__(path)
        self._dicts: dict[str, Mapping[str, torch.Tensor]] = {}
        for file in files:
            try:
                obj = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except FileNotFoundError:
                raise FileNotFoundError(f"{file}: no such file") from None
            except Exception as exc:  # noqa: BLE001 - torch raises many kinds; name the file
                raise WeightsFileError(
                    f"{file}: cannot be read as a weights-only PyTorch file (torch.load with "
                    f"weights_only=True, mmap=True; a file from torch.save of tensors in the "
                    f"zip format is expected): {str(exc).splitlines()[0][:300]}"
                ) from exc
            tensors = _state_dict_of(obj, file)
            self._dicts[str(file)] = tensors
            for key, t in tensors.items():
                if key in self.tensors:
                    raise WeightsFileError(
                        f"{file}: tensor {key!r} is also in {self.tensors[key].file}"
                    )
                self.tensors[key] = TensorInfo(tuple(t.shape), t.dtype, file)

    def read_into(self, key: str, out: torch.Tensor, *, start: int = 0) -> None:
        info = self._check_range(key, start, out.numel())
        flat = self._dicts[str(info.file)][key].reshape(-1)
        with torch.no_grad():
            out.copy_(flat[start : start + out.numel()].view(out.shape))

    def close(self) -> None:
        self._dicts.clear()


def _index_files(index: Path) -> list[Path]:
    """The shard files a Hugging Face ``*.index.json`` names (each must exist)."""
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
        weight_map = doc["weight_map"]
        names = sorted(set(weight_map.values()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise WeightsFileError(f"{index}: not a weights index (weight_map): {exc}") from None
    files = []
    for name in names:
        if not isinstance(name, str) or os.sep in name or name in ("", ".", ".."):
            raise WeightsFileError(f"{index}: {name!r} is not a file name in its folder")
        file = index.parent / name
        if not file.is_file():
            raise FileNotFoundError(f"{file}: missing (named in {index.name})")
        files.append(file)
    return files


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    # an 8-byte little-endian length, then the JSON header's "{"
    return len(head) == 9 and head[8:9] == b"{"


def open_weights(path: str | os.PathLike) -> WeightSource:
    """Open a weights file or a Hugging Face model folder; see the module docstring."""
    path = Path(path)
    if path.is_dir():
        for name in HF_FILES:
            candidate = path / name
            if candidate.is_file():
                break
        else:
            raise FileNotFoundError(
                f"{path}: a folder with none of {', '.join(HF_FILES)} (not a Hugging Face "
                "model folder)"
            )
        if name.endswith(".index.json"):
            files = _index_files(candidate)
            if name.startswith("model.safetensors"):
                return SafetensorsSource(candidate, files)
            return TorchFileSource(candidate, files)
        path = candidate
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix == ".safetensors" or _is_safetensors(path):
        return SafetensorsSource(path, [path])
    return TorchFileSource(path, [path])
