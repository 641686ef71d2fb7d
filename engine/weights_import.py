"""Start training from weights saved elsewhere: ``engine.load_weights(path)``.

``load_weights(engine, path, strict=True)`` fills an engine's parameters and
persistent buffers from a safetensors file, a PyTorch state-dict file or a
Hugging Face model folder (:mod:`tiermem.engine.weight_sources`), as if the
model had been given those weights with ``load_state_dict`` before
:func:`tiermem.initialize`: the fp32 master weights are the file's values in
fp32, the parameters those in the compute dtype, the Adam moments zero and
the step count 0, so training from there follows the same trajectory. It
works whatever the engine's stage and placement, also for a model built with
:func:`tiermem.init_context`. A collective: every rank calls it.

[Note: every rank opens the file itself (headers only) and reads just the
element ranges of its own shard of each parameter, straight into where the
shard lives: the optimizer's master chunk (host memory, or an NVMe store
sub-group fetched for the write) and the parameter home, reusing the
checkpoint loader's write paths. So a model larger than RAM never passes
through RAM whole and no rank reads the whole model (except at stage 0,
where every rank keeps all parameters anyway). Persistent buffers are small
and replicated: every rank reads them whole.]

[Note: names. A parameter is looked up under each name the model knows it by
(``named_parameters(remove_duplicate=False)``), its own first, so a file with
a tied weight saved once (``wte.weight`` without ``lm_head.weight``, as
``save_pretrained`` and ``tiermem export`` write) or twice (a plain
``state_dict()``) both load. Like ``load_state_dict``, ``strict`` makes
missing and unexpected names an error; a shape mismatch is always one, and
both are found before anything in the engine changes.]
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

# [Note: the checkpoint loader's own helpers (collective error flags, shard pieces, Adam
#  step counts), reused rather than copied: an import is a checkpoint load with moments
#  zero and values from another file format.]
from tiermem.engine.checkpoint import _all_ok, _group_steps, _pieces, persistent_buffers
from tiermem.engine.checkpoint_format import CheckpointError
from tiermem.engine.checkpoint_state import CHUNK_ELEMENTS, optimizer_access
from tiermem.engine.weight_sources import WeightSource, open_weights

__all__ = ["LoadReport", "WeightsMismatchError", "load_weights"]

logger = logging.getLogger("tiermem.engine.weights")


class WeightsMismatchError(CheckpointError):
    """The file's tensors do not fit the model (names the file and the tensors)."""


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_weights` did, like ``load_state_dict``'s result."""

    path: Path
    loaded: tuple[str, ...]  # model names filled (parameters and buffers)
    missing_keys: tuple[str, ...]  # model names the file lacks (kept their values)
    unexpected_keys: tuple[str, ...]  # file names the model lacks (ignored)


@dataclass(frozen=True)
class _Plan:
    sources: dict[str, str]  # model name (slot or buffer) -> tensor name in the file
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


def _aliases(module: torch.nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> every name the module knows it by, registration order."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return names


def _plan(engine: Any, source: WeightSource, strict: bool) -> _Plan:
    aliases = _aliases(engine.module)
    wanted: dict[str, tuple[list[str], tuple[int, ...]]] = {}
    for group in engine.groups:
        for slot, param in zip(group.layout.slots, group.params, strict=True):
            names = [slot.name] + [n for n in aliases.get(id(param), []) if n != slot.name]
            wanted[slot.name] = (names, tuple(slot.shape))
    for name, buf in persistent_buffers(engine.module):
        wanted[name] = ([name], tuple(buf.shape))
    sources, missing, problems = {}, [], []
    known: set[str] = set()
    for name, (names, shape) in wanted.items():
        known.update(names)
        key = next((n for n in names if n in source.tensors), None)
        if key is None:
            missing.append(name)
            continue
        info = source.tensors[key]
        if info.shape != shape:
            problems.append(
                f"{info.file}: {key!r} has shape {list(info.shape)}, the model's "
                f"{name!r} has {list(shape)}"
            )
        sources[name] = key
    unexpected = sorted(set(source.tensors) - known)
    if problems:
        raise WeightsMismatchError("; ".join(problems[:5]))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise WeightsMismatchError(
            f"{source.path}: does not fit the model ({'; '.join(parts)}); pass strict=False "
            "to load what matches"
        )
    return _Plan(sources, tuple(missing), tuple(unexpected))


def _fill_trainable(engine: Any, group: Any, access: Any, source: WeightSource, plan: _Plan):
    """Masters (fp32) and the parameter shard of a trainable group; moments zeroed."""
    target = group.update_target()
    for lo, hi in access.chunks(group.key):
        pieces = [p for p in _pieces(group, lo, hi) if p.name in plan.sources]
        keep = None
        if sum(p.hi - p.lo for p in pieces) != hi - lo:  # missing params or padding stay
            with access.read(group.key, lo, hi) as current:
                keep = current["master"].clone()
        with access.write(group.key, lo, hi, step=0) as states:
            if keep is not None:
                states["master"].copy_(keep)
            states["exp_avg"].zero_()
            states["exp_avg_sq"].zero_()
            for p in pieces:
                master = states["master"][p.lo - lo : p.hi - lo]
                source.read_into(plan.sources[p.name], master, start=p.start)
                target[p.lo : p.hi].copy_(master)


def _fill_frozen(group: Any, source: WeightSource, plan: _Plan) -> None:
    """The parameter shard of a frozen group, through fp32 in chunks (as initialize does)."""
    target = group.update_target()
    for p in _pieces(group, 0, group.layout.shard_numel):
        key = plan.sources.get(p.name)
        if key is None:
            continue
        for a in range(p.start, p.end, CHUNK_ELEMENTS):
            b = min(p.end, a + CHUNK_ELEMENTS)
            chunk = torch.empty(b - a, dtype=torch.float32)
            source.read_into(key, chunk, start=a)
            offset = p.lo + (a - p.start)
            target[offset : offset + (b - a)].copy_(chunk)


def _fill_buffers(engine: Any, source: WeightSource, plan: _Plan) -> list[str]:
    done = []
    for name, buf in persistent_buffers(engine.module):
        key = plan.sources.get(name)
        if key is not None:
            with torch.no_grad():
                source.read_into(key, buf)
            done.append(name)
    return done


def load_weights(engine: Any, path: str | os.PathLike, *, strict: bool = True) -> LoadReport:
    """Set ``engine``'s weights from the file or Hugging Face folder ``path`` (a collective).

    Call it before training (after :func:`tiermem.initialize`, before the first
    optimizer step): the Adam moments start from zero. ``strict`` refuses
    files whose names do not match the model's, like ``load_state_dict``;
    with ``strict=False`` what the file lacks keeps its current value.
    Raises :class:`WeightsMismatchError`,
    :class:`~tiermem.engine.weight_sources.WeightsFileError` or
    ``FileNotFoundError`` naming the file, with the engine unchanged.
    """
    stepped = {k: v for k, v in _group_steps(engine).items() if v > 0}
    if stepped or engine.global_steps:
        raise RuntimeError(
            f"load_weights sets the weights training starts from; this engine has taken "
            f"{engine.global_steps} optimizer steps, whose Adam moments would not match. "
            "Call it before training, or resume with load_checkpoint"
        )
    source = _all_ok(engine, lambda: open_weights(path), f"opening {path}")
    try:
        plan = _all_ok(engine, lambda: _plan(engine, source, strict), f"matching {path}")
        access = optimizer_access(engine.shard_optimizer)
        loaded: list[str] = []
        for group in engine.groups:
            if group.trainable:
                fill = partial(_fill_trainable, engine, group, access, source, plan)
            else:
                fill = partial(_fill_frozen, group, source, plan)
            what = f"loading the parameters of {group.layout.module_name!r} from {path}"
            _all_ok(engine, fill, what)
            group.after_update()
            loaded.extend(s.name for s in group.layout.slots if s.name in plan.sources)
        loaded += _all_ok(engine, lambda: _fill_buffers(engine, source, plan), "loading buffers")
    finally:
        source.close()
    engine.comm.barrier()
    if plan.missing or plan.unexpected:
        logger.warning(
            "load_weights(%s): missing %s, unexpected %s",
            path,
            list(plan.missing[:5]),
            list(plan.unexpected[:5]),
        )
    return LoadReport(Path(path), tuple(loaded), plan.missing, plan.unexpected)
