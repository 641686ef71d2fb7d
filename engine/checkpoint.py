"""Save and load a :class:`~tiermem.engine.engine.TiermemEngine`'s whole training state.

``save_checkpoint(engine, dir, tag, client_state)`` writes, and
``load_checkpoint(engine, dir, tag)`` restores: parameters (compute dtype),
fp32 master weights and both Adam moments, each group's Adam step count,
the engine's step counters, the LR scheduler, the loss scaler, the
optimizer's hyperparameters, every rank's RNG states (torch CPU, CUDA when
present, Python ``random``, NumPy), the parsed config, and the caller's
JSON-able ``client_state``. Both are collectives: every rank calls them.
The format (safetensors + JSON manifest, atomic commit) is
:mod:`tiermem.engine.checkpoint_format`; docs/checkpoints.md describes it.

[Note: topology independence. Tensors are stored by parameter name and
element range, not by rank or group: rank ``r`` writes one file with, for
each parameter its shard overlaps, the slice ``[start, end)`` of the
flattened parameter, for ``param`` and the three optimizer states. The
manifest maps ``name -> kind -> [(file, key, start, end)]``. A load computes
the ranges the rank owns under the *current* world size, stage and
placement and reads just those byte ranges (``pread``), so N ranks load
what M ranks saved, stage 2 what stage 3 saved, host what NVMe saved.]

[Note: streaming. A rank writes its file front to back one chunk of one
shard at a time: NVMe-resident optimizer states one store sub-group at a
time, host and device states in chunks of at most 4M elements, parameter
shards from their home. Nothing is gathered across ranks; the only memory a
save adds is one chunk.]
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tiermem.engine.checkpoint_format import (
    CheckpointCorruptError,
    CheckpointError,
    SafetensorsReader,
    SafetensorsWriter,
    TensorEntry,
    check_json,
    commit_staging,
    decode_bytes,
    dtype_from_name,
    dtype_name,
    encode_bytes,
    member_path,
    pause_point,
    prepare_staging,
    read_manifest,
    resolve_checkpoint,
    staging_dir,
    validate_tag,
    verify_files,
    write_manifest,
    writing,
)
from tiermem.engine.checkpoint_lock import locked_save_dir
from tiermem.engine.checkpoint_state import (
    CHUNK_ELEMENTS,
    KINDS,
    optimizer_access,
    read_param_shard,
)

__all__ = ["CheckpointMismatchError", "load_checkpoint", "save_checkpoint"]

logger = logging.getLogger("tiermem.engine.checkpoint")


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's model does not match the engine's (names the parameters)."""


# -- collective error handling -----------------------------------------------------------------
def _all_ok(engine: Any, fn: Callable[[], Any], what: str) -> Any:
    """Run ``fn`` on every rank; if it raised on any rank, raise on every rank.

    [Note: a rank that fails alone would leave the others waiting in the next
    collective forever; so every phase of a save or load ends with an
    all-reduce of per-rank failure flags.]
    """
    comm = engine.comm
    result, error = None, None
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - re-raised below on every rank
        error = exc
    if comm.world_size > 1:
        flags = torch.zeros(comm.world_size, dtype=torch.float32, device=engine.device)
        flags[comm.rank] = 1.0 if error is not None else 0.0
        comm.all_reduce(flags)
        failed = [r for r in range(comm.world_size) if flags[r] > 0]
    else:
        failed = [0] if error is not None else []
    if error is not None:
        raise error
    if failed:
        raise CheckpointError(f"{what} failed on rank(s) {failed}; see their error")
    return result


# -- RNG --------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """This process's RNG states as JSON."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    out: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": encode_bytes(torch.get_rng_state().numpy().tobytes()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [encode_bytes(s.numpy().tobytes()) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rank_rng(manifest: dict[str, Any], rank: int) -> None:
    """Set this rank's RNG states from a checkpoint manifest; a rank the saving
    run did not have keeps its own, with a warning."""
    rngs = manifest["rng"]
    if rank < len(rngs):
        set_rng_state(rngs[rank])
    else:
        logger.warning(
            "rank %d: the checkpoint was saved by %d ranks; RNG states left as they are",
            rank,
            len(rngs),
        )


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s result."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(
        torch.frombuffer(bytearray(decode_bytes(state["torch"])), dtype=torch.uint8)
    )
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(
                [torch.frombuffer(bytearray(decode_bytes(s)), dtype=torch.uint8) for s in cuda]
            )
        else:
            logger.warning(
                "checkpoint has CUDA RNG states of %d devices, this process sees %d; "
                "CUDA RNG not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


# -- what a rank writes ------------------------------------------------------------------------
@dataclass
class _Piece:
    """Elements ``[start, end)`` of parameter ``name``, at ``[lo, hi)`` of the shard chunk."""

    name: str
    start: int
    end: int
    lo: int
    hi: int

    def key(self, kind: str) -> str:
        return f"{kind}:{self.name}:{self.start}-{self.end}"


@dataclass
class _Chunk:
    group: Any
    lo: int  # shard-relative
    hi: int
    pieces: list[_Piece]
    kinds: tuple[str, ...]


@dataclass
class _RankPlan:
    chunks: list[_Chunk] = field(default_factory=list)
    buffers: list[tuple[str, torch.Tensor]] = field(default_factory=list)

    def entries(self, dtype: torch.dtype) -> list[TensorEntry]:
        out = []
        for chunk in self.chunks:
            for kind in chunk.kinds:
                d = dtype if kind == "param" else torch.float32
                for p in chunk.pieces:
                    out.append(TensorEntry(p.key(kind), d, (p.end - p.start,)))
        for name, buf in self.buffers:
            out.append(TensorEntry(f"buffer:{name}", buf.dtype, tuple(buf.shape)))
        return out


def _owns(engine: Any, group: Any) -> bool:
    lay = group.layout
    if lay.num_shards == 1:
        return engine.comm.rank == 0  # unsharded (stage 0): rank 0 writes
    return lay.shard_rank == engine.comm.rank


def _slot_offsets(group: Any) -> list[int]:
    """The flat offsets of ``group``'s parameters, in slot order (ascending)."""
    return [slot.offset for slot in group.layout.slots]


def _pieces(group: Any, lo: int, hi: int, offsets: list[int] | None = None) -> list[_Piece]:
    """The parameter slices inside shard-relative ``[lo, hi)`` of ``group``.

    ``offsets``: :func:`_slot_offsets` of the group, for callers that cut one
    group many times (the slots are found by bisection, not scanned per cut).
    """
    lay = group.layout
    if offsets is None:
        offsets = _slot_offsets(group)
    a, b = lay.shard_start + lo, min(lay.shard_start + hi, lay.numel)
    out = []
    slots = lay.slots
    for i in range(max(0, bisect.bisect_right(offsets, a) - 1), len(slots)):
        slot = slots[i]
        if slot.offset >= b:
            break
        s, e = max(a, slot.offset), min(b, slot.offset + slot.numel)
        if s < e:
            base = lay.shard_start
            out.append(_Piece(slot.name, s - slot.offset, e - slot.offset, s - base, e - base))
    return out


def persistent_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The module's buffers that belong in a state dict, by qualified name."""
    out = []
    for mod_name, mod in module.named_modules():
        for name, buf in mod._buffers.items():
            if buf is None or name in mod._non_persistent_buffers_set:
                continue
            out.append((f"{mod_name}.{name}" if mod_name else name, buf))
    return out


def _plan(engine: Any, access: Any) -> _RankPlan:
    plan = _RankPlan()
    for group in engine.groups:
        if not _owns(engine, group):
            continue
        lay = group.layout
        valid = max(0, min(lay.shard_end, lay.numel) - lay.shard_start)
        if group.trainable:
            chunks = access.chunks(group.key)
            kinds = ("param", *KINDS)
        else:
            step = CHUNK_ELEMENTS
            chunks = [(lo, min(valid, lo + step)) for lo in range(0, valid, step)]
            kinds = ("param",)
        offsets = _slot_offsets(group)
        for lo, hi in chunks:
            pieces = _pieces(group, lo, min(hi, valid), offsets)
            if pieces:
                plan.chunks.append(_Chunk(group, lo, hi, pieces, kinds))
    if engine.comm.rank == 0:
        plan.buffers = persistent_buffers(engine.module)
    return plan


def _write_rank_file(engine: Any, path: Path, plan: _RankPlan, access: Any) -> Any:
    entries = plan.entries(engine.dtype)
    meta = {"format": "tiermem-checkpoint", "rank": str(engine.comm.rank)}
    with SafetensorsWriter(path, entries, metadata=meta) as writer:
        by_group: dict[int, list[_Chunk]] = {}
        for chunk in plan.chunks:
            by_group.setdefault(chunk.group.index, []).append(chunk)
        for chunks in by_group.values():
            group = chunks[0].group
            with read_param_shard(group) as shard:
                for chunk in chunks:
                    for p in chunk.pieces:
                        writer.write(p.key("param"), shard[p.lo : p.hi].to("cpu"))
                    if len(chunk.kinds) == 1:
                        continue
                    with access.read(group.key, chunk.lo, chunk.hi) as states:
                        for kind in KINDS:
                            for p in chunk.pieces:
                                t = states[kind][p.lo - chunk.lo : p.hi - chunk.lo]
                                writer.write(p.key(kind), t)
            pause_point("tensors")
        for name, buf in plan.buffers:
            writer.write(f"buffer:{name}", buf.detach().to("cpu"))
        return writer.close()


def _write_json_synced(path: Path, obj: Any, *, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to the new file ``path`` and fsync it (errors name the file)."""
    data = json.dumps(obj, sort_keys=True, indent=indent).encode()
    if indent is not None:
        data += b"\n"
    with writing(path), open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _group_steps(engine: Any) -> dict[int, int]:
    steps = getattr(engine, "_group_steps", None)
    if steps is not None:
        return {int(k): int(v) for k, v in steps.items()}
    legacy = int(getattr(engine, "_adam_steps", 0))
    return {g.index: legacy for g in engine.groups if g.trainable}


def _set_group_steps(engine: Any, steps: dict[int, int]) -> None:
    if hasattr(engine, "_group_steps"):
        engine._group_steps = {k: v for k, v in steps.items() if v > 0}
    else:
        engine._adam_steps = max(steps.values(), default=0)


def _engine_state(engine: Any, client_state: Any) -> dict[str, Any]:
    """The JSON part of the checkpoint that every rank shares (checked before writing)."""
    sched = engine.lr_scheduler
    state: dict[str, Any] = {
        "counters": {
            "global_steps": int(engine.global_steps),
            "global_samples": int(engine.global_samples),
            "micro_steps": int(engine.micro_steps),
            "skipped_steps": int(engine.skipped_steps),
        },
        "loss_scaler": {
            "type": type(engine.loss_scaler).__name__,
            "state": engine.loss_scaler.state_dict(),
        },
        "lr_scheduler": sched.state_dict() if sched is not None else None,
        "optimizer_param_groups": (
            [{k: v for k, v in g.items() if k != "params"} for g in engine.optimizer.param_groups]
            if engine.optimizer is not None
            else None
        ),
        "topology": {
            "world_size": engine.comm.world_size,
            "stage": engine.stage,
            "offload_param": engine.settings.zero.offload_param,
            "offload_optimizer": engine.settings.zero.offload_optimizer,
            "dtype": dtype_name(engine.dtype),
        },
        "config": _config_dict(engine),
        "model_config": model_config(engine.module),
        "client_state": client_state,
    }
    check_json(state["lr_scheduler"], where="lr_scheduler.state_dict()")
    check_json(state["optimizer_param_groups"], where="optimizer.param_groups")
    check_json(state["loss_scaler"], where="loss_scaler.state_dict()")
    check_json(state["config"], where="config")
    check_json(client_state, where="client_state")
    return state


def _config_dict(engine: Any) -> Any:
    raw = getattr(engine.settings, "raw", None)
    to_dict = getattr(raw, "to_dict", None)
    return to_dict() if callable(to_dict) else None


def model_config(module: torch.nn.Module) -> dict[str, Any] | None:
    """``module.config.to_dict()`` as JSON when the module has such a config (a
    transformers model), else None; ``architectures`` filled in as ``save_pretrained`` does.

    [Note: duck-typed so tiermem never imports transformers; values JSON cannot
    carry (a torch dtype in old configs) are stored as their ``str``. ``tiermem
    export --hf`` writes it as ``config.json``.]
    """
    to_dict = getattr(getattr(module, "config", None), "to_dict", None)
    if not callable(to_dict):
        return None
    raw = to_dict()
    if not isinstance(raw, dict):
        return None
    cfg = json.loads(json.dumps(raw, default=str))
    if not cfg.get("architectures"):
        cfg["architectures"] = [type(module).__name__]
    return cfg


def _params_index(engine: Any, contributions: list[dict[str, Any]]) -> dict[str, Any]:
    steps = _group_steps(engine)
    params: dict[str, Any] = {}
    for group in engine.groups:
        for slot in group.layout.slots:
            params[slot.name] = {
                "shape": list(slot.shape),
                "dtype": dtype_name(engine.dtype),
                "trainable": bool(group.trainable),
                "module": group.layout.module_name,
                "adam_step": steps.get(group.index, 0) if group.trainable else 0,
                "pieces": {},
            }
    for contrib in contributions:
        file = contrib["file"]
        for name, kind, start, end, key in contrib["pieces"]:
            params[name]["pieces"].setdefault(kind, []).append([file, key, start, end])
    for info in params.values():
        for pieces in info["pieces"].values():
            pieces.sort(key=lambda p: p[2])
    return params


def save_checkpoint(
    engine: Any,
    save_dir: str | os.PathLike,
    tag: str | None = None,
    client_state: Any = None,
) -> Path:
    """Write ``engine``'s training state to ``save_dir/tag`` and point ``save_dir/latest`` at it.

    A collective: every rank calls it with the same arguments; ``save_dir``
    must be one directory all ranks see. Call it after an optimizer step:
    gradients accumulated towards the next one are not saved (a warning says
    so). ``tag`` defaults to
    ``global_step<N>``; ``client_state`` must be JSON-able (it comes back from
    :func:`load_checkpoint`). Saving over an existing tag replaces it
    atomically. Returns the checkpoint's directory.
    """
    comm = engine.comm
    tag = validate_tag(tag if tag is not None else f"global_step{engine.global_steps}")
    root = Path(save_dir)
    started = time.perf_counter()
    if engine.micro_steps % engine.gradient_accumulation_steps or engine.reducer.has_grads:
        logger.warning(
            "saving checkpoint %r between optimizer steps: the gradients accumulated since "
            "the last step are not saved; save after engine.step() at an accumulation boundary",
            tag,
        )
    state = _all_ok(engine, lambda: _engine_state(engine, client_state), "checking the state")
    # [Note: rank 0 holds save_dir's lock from before the staging cleanup to
    #  after the commit, so a second job saving into the same directory fails
    #  at once instead of deleting this one's staging directory.]
    lock = contextlib.ExitStack()

    def prepare() -> None:
        if comm.rank == 0:
            lock.enter_context(locked_save_dir(root))
            prepare_staging(root, tag)

    with lock:
        return _save_locked(engine, root, tag, state, prepare, started)


def _save_locked(
    engine: Any,
    root: Path,
    tag: str,
    state: dict[str, Any],
    prepare: Callable[[], None],
    started: float,
) -> Path:
    """The rest of :func:`save_checkpoint`: ``prepare`` (the lock and the staging
    directory on rank 0), the tensors, the commit."""
    comm = engine.comm
    _all_ok(engine, prepare, "preparing the staging directory")
    stage = staging_dir(root, tag)
    rank_file = f"rank{comm.rank:05d}.safetensors"

    def write_own() -> None:
        access = optimizer_access(engine.shard_optimizer)
        plan = _plan(engine, access)
        record = _write_rank_file(engine, stage / rank_file, plan, access)
        pieces = [
            [p.name, kind, p.start, p.end, p.key(kind)]
            for chunk in plan.chunks
            for kind in chunk.kinds
            for p in chunk.pieces
        ]
        buffers = {
            name: {
                "file": rank_file,
                "key": f"buffer:{name}",
                "shape": list(buf.shape),
                "dtype": dtype_name(buf.dtype),
            }
            for name, buf in plan.buffers
        }
        contribution = {
            "rank": comm.rank,
            "file": rank_file,
            "record": record.to_json(),
            "pieces": pieces,
            "buffers": buffers,
            "rng": rng_state(),
        }
        _write_json_synced(stage / f"rank{comm.rank:05d}.json", contribution)

    def finish() -> Path:
        contributions = []
        for r in range(comm.world_size):
            part = stage / f"rank{r:05d}.json"
            contributions.append(json.loads(part.read_bytes()))
        manifest = dict(state)
        manifest["tag"] = tag
        manifest["created_unix"] = time.time()
        manifest["files"] = {c["file"]: c["record"] for c in contributions}
        manifest["params"] = _params_index(engine, contributions)
        manifest["buffers"] = {k: v for c in contributions for k, v in c["buffers"].items()}
        manifest["rng"] = [c["rng"] for c in contributions]
        pause_point("manifest")
        write_manifest(stage, manifest)
        for r in range(comm.world_size):
            (stage / f"rank{r:05d}.json").unlink()
        return commit_staging(root, tag)

    try:
        _all_ok(engine, write_own, "writing the tensors")
        final = _all_ok(engine, finish if comm.rank == 0 else lambda: None, "committing")
    except BaseException:
        # [Note: every rank has stopped writing (_all_ok agreed on the failure):
        #  the partial staging directory goes now rather than holding disk space
        #  (a full disk is a likely cause) until the next save. A killed process
        #  cannot do this; the next save removes what it left.]
        if comm.rank == 0:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    nbytes = sum(f.stat().st_size for f in (root / tag).iterdir()) if comm.rank == 0 else 0
    logger.info(
        "saved checkpoint %s (%d bytes on rank 0's view) in %.2f s",
        root / tag,
        nbytes,
        time.perf_counter() - started,
    )
    return final if final is not None else root / tag


# -- load -------------------------------------------------------------------------------------
class _Readers:
    """Open safetensors files of one checkpoint, by file name, opened on first use."""

    def __init__(self, directory: Path, files: dict[str, Any]) -> None:
        self.directory = directory
        self.files = files
        self._open: dict[str, SafetensorsReader] = {}
        self._saved: dict[tuple[str, str], tuple[list[int], list[Any]]] = {}

    def saved(self, info: dict[str, Any], name: str, kind: str) -> tuple[list[int], list[Any]]:
        """The saved pieces ``[file, key, start, end]`` of ``kind`` of parameter ``name``,
        sorted by start, and their starts (for bisection).

        [Note: built once per parameter and kind. Scanning every saved piece for
        each range filled made a load quadratic in the pieces (hours for the ~84k
        pieces of DeepSpeed's NVMe test config at hidden 2048, when sub-groups
        were cut through parameters).]
        """
        found = self._saved.get((name, kind))
        if found is None:
            pieces = sorted(info["pieces"].get(kind, ()), key=lambda p: p[2])
            found = ([p[2] for p in pieces], pieces)
            self._saved[(name, kind)] = found
        return found

    def get(self, name: str) -> SafetensorsReader:
        reader = self._open.get(name)
        if reader is None:
            if name not in self.files:
                raise CheckpointCorruptError(
                    f"{self.directory / 'manifest.json'}: refers to {name!r}, "
                    "which it does not list among its files"
                )
            manifest = self.directory / "manifest.json"
            path = member_path(self.directory, name, manifest=manifest)
            try:
                reader = SafetensorsReader(path, follow_symlinks=False)
            except CheckpointCorruptError as exc:
                raise CheckpointCorruptError(f"{manifest}: files entry {name!r}: {exc}") from None
            self._open[name] = reader
        return reader

    def close(self) -> None:
        for reader in self._open.values():
            reader.close()
        self._open.clear()


def _fill(
    readers: _Readers, info: dict[str, Any], name: str, kind: str, a: int, out: torch.Tensor
) -> None:
    """Fill ``out`` with elements ``[a, a + out.numel())`` of ``kind`` of parameter ``name``."""
    b = a + out.numel()
    covered = 0
    starts, pieces = readers.saved(info, name, kind)
    for i in range(max(0, bisect.bisect_right(starts, a) - 1), len(pieces)):
        file, key, start, end = pieces[i]
        if start >= b:
            break
        s, e = max(a, start), min(b, end)
        if s >= e:
            continue
        readers.get(file).read_into(key, out[s - a : e - a], start=s - start)
        covered += e - s
    if covered != b - a:
        raise CheckpointCorruptError(
            f"{readers.directory}: the manifest does not cover elements {a}..{b} of "
            f"{kind} of {name!r} ({covered} of {b - a} found)"
        )


def _param_source(info: dict[str, Any], dtype: torch.dtype) -> str:
    """Which stored kind gives the best parameter values in ``dtype``."""
    same = info["dtype"] == dtype_name(dtype)
    if not same and info["pieces"].get("master"):
        return "master"  # e.g. a bf16 checkpoint loaded in fp32: the fp32 masters are exact
    return "param"


def _load_params(engine: Any, group: Any, params: dict[str, Any], readers: _Readers) -> None:
    lay = group.layout
    target = group.update_target()

    def fill() -> None:
        for p in _pieces(group, 0, lay.shard_numel):
            info = params[p.name]
            kind = _param_source(info, engine.dtype)
            _fill(readers, info, p.name, kind, p.start, target[p.lo : p.hi])

    _all_ok(engine, fill, f"loading the parameters of {lay.module_name!r}")
    group.after_update()


def _load_optimizer_states(
    engine: Any, group: Any, access: Any, params: dict[str, Any], readers: _Readers
) -> int:
    lay = group.layout
    steps = {params[s.name]["adam_step"] for s in lay.slots}
    step = max(steps)
    if len(steps) > 1:
        logger.warning(
            "parameters of %r were saved at different Adam steps %s; using %d",
            lay.module_name,
            sorted(steps),
            step,
        )
    offsets = _slot_offsets(group)
    for lo, hi in access.chunks(group.key):
        with access.write(group.key, lo, hi, step=step) as states:
            for t in states.values():
                t.zero_()
            for p in _pieces(group, lo, hi, offsets):
                info = params[p.name]
                for kind in KINDS:
                    dest = states[kind][p.lo - lo : p.hi - lo]
                    if info["pieces"].get(kind):
                        _fill(readers, info, p.name, kind, p.start, dest)
                    elif kind == "master":  # saved frozen: start from its weights
                        _fill(readers, info, p.name, "param", p.start, dest)
    return step


def _check_model(engine: Any, manifest: dict[str, Any], path: Path) -> None:
    saved = manifest["params"]
    mine = {s.name: list(s.shape) for g in engine.groups for s in g.layout.slots}
    missing = sorted(set(mine) - set(saved))
    extra = sorted(set(saved) - set(mine))
    shapes = sorted(n for n in set(mine) & set(saved) if saved[n]["shape"] != mine[n])
    problems = []
    if missing:
        problems.append(f"parameters missing from the checkpoint: {missing[:5]}")
    if extra:
        problems.append(f"parameters the model does not have: {extra[:5]}")
    for n in shapes[:5]:
        problems.append(f"{n!r} has shape {saved[n]['shape']} there, {mine[n]} here")
    bufs = {name for name, _ in persistent_buffers(engine.module)}
    if bufs != set(manifest["buffers"]):
        problems.append(
            f"buffers differ: missing {sorted(bufs - set(manifest['buffers']))[:5]}, "
            f"unexpected {sorted(set(manifest['buffers']) - bufs)[:5]}"
        )
    if problems:
        raise CheckpointMismatchError(f"{path}: does not fit this model: " + "; ".join(problems))


def _verify(engine: Any, path: Path, files: dict[str, Any]) -> None:
    """Check every file's size and CRC32C, the files shared out over the ranks."""
    comm = engine.comm
    names = sorted(files)
    mine = {n: files[n] for i, n in enumerate(names) if i % comm.world_size == comm.rank}
    bad = verify_files(path, mine)
    if comm.world_size > 1:
        flags = torch.zeros(len(names), dtype=torch.float32, device=engine.device)
        for i, n in enumerate(names):
            if n in bad:
                flags[i] = 1.0
        comm.all_reduce(flags)
        for i, n in enumerate(names):
            if flags[i] > 0 and n not in bad:
                bad[n] = f"{path / n}: failed verification on rank {i % comm.world_size}"
    if bad:
        raise CheckpointCorruptError(
            "corrupt checkpoint: " + "; ".join(bad[n] for n in sorted(bad))
        )


def _load_buffers(engine: Any, manifest: dict[str, Any], readers: _Readers) -> None:
    for name, buf in persistent_buffers(engine.module):
        info = manifest["buffers"][name]
        dtype_from_name(info["dtype"], where=str(readers.directory / "manifest.json"))
        with torch.no_grad():
            readers.get(info["file"]).read_into(info["key"], buf)


def _restore_state(engine: Any, manifest: dict[str, Any]) -> None:
    counters = manifest["counters"]
    engine.global_steps = int(counters["global_steps"])
    engine.global_samples = int(counters["global_samples"])
    engine.micro_steps = int(counters["micro_steps"])
    engine.skipped_steps = int(counters["skipped_steps"])
    scaler = manifest["loss_scaler"]
    if scaler["type"] == type(engine.loss_scaler).__name__:
        engine.loss_scaler.load_state_dict(scaler["state"])
    else:
        logger.warning(
            "checkpoint has a %s, the engine a %s: loss scale not restored",
            scaler["type"],
            type(engine.loss_scaler).__name__,
        )
    saved_groups = manifest["optimizer_param_groups"]
    if engine.optimizer is not None and saved_groups is not None:
        groups = engine.optimizer.param_groups
        if len(groups) != len(saved_groups):
            logger.warning(
                "checkpoint has %d optimizer param groups, the engine %d: hyperparameters "
                "not restored",
                len(saved_groups),
                len(groups),
            )
        else:
            for group, saved in zip(groups, saved_groups, strict=True):
                for key, value in saved.items():
                    group[key] = tuple(value) if isinstance(group.get(key), tuple) else value
    sched, saved_sched = engine.lr_scheduler, manifest["lr_scheduler"]
    if sched is not None and saved_sched is not None:
        sched.load_state_dict(saved_sched)
    elif sched is not None or saved_sched is not None:
        logger.warning(
            "LR scheduler not restored: the %s has none",
            "checkpoint" if saved_sched is None else "engine",
        )
    restore_rank_rng(manifest, engine.comm.rank)


def load_checkpoint(
    engine: Any,
    load_dir: str | os.PathLike,
    tag: str | None = None,
    *,
    verify: bool = True,
) -> tuple[Path, Any]:
    """Restore ``engine`` from ``load_dir/tag`` (``latest``'s tag when None).

    A collective. Works whatever world size, ZeRO stage and offload placement
    the checkpoint was saved with. Every file's size and CRC32C is checked
    first (``verify``), and the model's parameter names and shapes against
    the manifest, before anything in the engine changes. Returns the
    checkpoint's directory and the ``client_state`` it was saved with.
    """
    started = time.perf_counter()

    def open_manifest() -> tuple[Path, dict[str, Any]]:
        path = resolve_checkpoint(load_dir, tag)
        return path, read_manifest(path)

    path, manifest = _all_ok(engine, open_manifest, "reading the manifest")
    if verify:
        _verify(engine, path, manifest["files"])
    _all_ok(engine, lambda: _check_model(engine, manifest, path), "checking the model")
    readers = _Readers(path, manifest["files"])
    params = manifest["params"]
    try:
        steps: dict[int, int] = {}
        access = optimizer_access(engine.shard_optimizer)
        for group in engine.groups:
            _load_params(engine, group, params, readers)
            if group.trainable:
                steps[group.index] = _all_ok(
                    engine,
                    lambda g=group: _load_optimizer_states(engine, g, access, params, readers),
                    f"loading the optimizer states of {group.layout.module_name!r}",
                )
        _all_ok(engine, lambda: _load_buffers(engine, manifest, readers), "loading buffers")
    finally:
        readers.close()
    _set_group_steps(engine, steps)
    _restore_state(engine, manifest)
    engine.comm.barrier()
    logger.info("loaded checkpoint %s in %.2f s", path, time.perf_counter() - started)
    return path, manifest.get("client_state")
