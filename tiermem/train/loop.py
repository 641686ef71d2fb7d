"""The training run of ``tiermem train``: corpus, model, engine, loop, checkpoint, scratch cleanup.

:func:`train` builds everything from a :class:`TrainOptions`, runs the
optimizer steps, calls ``on_step`` after each with a :class:`StepRecord`
(loss, tokens/s, bytes moved between tiers and time stalled on the store in
that step), saves a checkpoint at the end and returns a :class:`TrainResult`
with the records, the compute spans and the store's trace for the report.

[Note: this package is CLI-level code: it imports the engine
(``tiermem.engine``), so no core module (``tiermem.aio``, ``tiermem.store``,
...) may import it; only ``tiermem.cli`` does.]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tiermem.engine.config import TiermemConfig
from tiermem.train.corpus import Corpus, batch_for_step, load_corpus
from tiermem.train.models import GPT, GPTConfig, preset
from tiermem.train.run_config import RunShape, build_run_config

__all__ = [
    "CheckpointUnavailable",
    "ComputeSpan",
    "ResumeError",
    "StepRecord",
    "TrainOptions",
    "TrainResult",
    "engine_stores",
    "train",
]

DEFAULT_LR = 2e-3


class CheckpointUnavailable(RuntimeError):
    """The engine cannot save or load checkpoints (yet)."""


class ResumeError(ValueError):
    """``resume`` cannot continue: no checkpoint, a damaged one, or one of another run."""


@dataclass(frozen=True, kw_only=True)
class TrainOptions:
    """What to train and how; every field has the command line's default.

    Attributes:
        model: a preset name of :data:`tiermem.train.models.PRESETS`.
        steps: optimizer steps of the whole run (a resumed run stops there too).
        seed: seeds the weights and the batches.
        config_file: a tiermem/DeepSpeed JSON config; None: the built-in one.
        nvme_path: where the scratch directory is made (None: the current
            directory).
        nvme_path_given: ``nvme_path`` came from the command line, so it
            replaces a config file's ``nvme_path``.
        keep: keep the scratch directory at the end.
        checkpoint_dir: where the final checkpoint goes (None: no checkpoint).
        resume: load the latest checkpoint in ``checkpoint_dir`` first.
        micro_batch_size: sequences per micro-batch of one rank (when neither
            ``batch_size`` nor the config sets a batch size).
        batch_size: sequences per optimizer step over all ranks
            (``train_batch_size``); None: the config's, else
            ``micro_batch_size`` per rank.
        accumulation: ``gradient_accumulation_steps``; None: the config's, else 1.
        seq_len: tokens per sequence; None: the preset's.
        corpus_bytes: size of the training text.
    """

    model: str = "small"
    steps: int = 300
    seed: int = 0
    config_file: Path | None = None
    nvme_path: Path | None = None
    nvme_path_given: bool = False
    keep: bool = False
    checkpoint_dir: Path | None = None
    resume: bool = False
    micro_batch_size: int = 8
    batch_size: int | None = None
    accumulation: int | None = None
    seq_len: int | None = None
    corpus_bytes: int = 2 << 20


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step, as the progress bar and the report show it."""

    step: int
    loss: float
    lr: float
    seconds: float
    tokens: int
    tokens_per_second: float
    bytes_moved: dict[str, int]
    stall_seconds: float


@dataclass(frozen=True)
class ComputeSpan:
    """One phase of one micro-step on the training thread (perf_counter seconds)."""

    phase: str  # "forward" | "backward" | "step"
    step: int
    start: float
    end: float


@dataclass
class TrainResult:
    """Everything a run produced, for the summary and the report."""

    options: TrainOptions
    model: GPTConfig
    config: TiermemConfig
    corpus_source: str
    corpus_tokens: int
    scratch_dir: Path
    scratch_removed: bool
    start_step: int
    records: list[StepRecord] = field(default_factory=list)
    spans: list[ComputeSpan] = field(default_factory=list)
    telemetry: dict[str, Any] = field(default_factory=dict)
    store_traces: list[tuple[float, dict]] = field(default_factory=list)
    prior_losses: list[float] = field(default_factory=list)  # steps before a resume
    clock_origin: float = 0.0
    checkpoint: dict[str, Any] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    device: str = "cpu"
    interrupted: bool = False
    world_size: int = 1
    backend: str = "none"
    batch: dict[str, int] = field(default_factory=dict)  # global, micro, accumulation

    @property
    def steps_run(self) -> int:
        """Optimizer steps this process ran (a resumed run counts from its start step)."""
        return len(self.records)


def engine_stores(engine: Any) -> list:
    """The tiered stores an engine pages through (empty without NVMe offload).

    [Note: the engine has no public accessor for its stores yet; they are
    ``engine.placements.stores``. Read here, in one place, so a later
    accessor is a one-line change.]
    """
    placements = getattr(engine, "placements", None)
    return list(getattr(placements, "stores", None) or [])


def _merge_snapshots(stores: list) -> dict[str, Any]:
    """The stores' telemetry summed (bytes and counts), for one engine."""
    total: dict[str, Any] = {
        "bytes_moved": {},
        "transfers": {},
        "stall_seconds": 0.0,
        "fetches": 0,
        "cache_hits": 0,
        "prefetch_hits": 0,
        "prefetch_misses": 0,
        "prefetches_issued": 0,
        "write_backs": 0,
        "checksum_seconds": 0.0,
        "tiers": {},
    }
    for store in stores:
        snap = store.telemetry.snapshot()
        for key in ("bytes_moved", "transfers"):
            for pair, n in snap[key].items():
                total[key][pair] = total[key].get(pair, 0) + n
        for key in (
            "stall_seconds",
            "fetches",
            "cache_hits",
            "prefetch_hits",
            "prefetch_misses",
            "prefetches_issued",
            "write_backs",
            "checksum_seconds",
        ):
            total[key] += snap.get(key, 0)
        for tier, stats in snap.get("tiers", {}).items():
            merged = total["tiers"].setdefault(tier, {})
            for k, v in stats.items():
                if isinstance(v, (int, float)):
                    merged[k] = merged.get(k, 0) + v
    return total


def make_scratch(parent: Path | None) -> Path:
    """A new, empty scratch directory under ``parent`` (the current directory by default)."""
    parent = Path.cwd() if parent is None else parent
    if not parent.is_dir():
        raise NotADirectoryError(f"--nvme-path: {parent} is not a directory")
    return Path(tempfile.mkdtemp(prefix="tiermem-train-", dir=parent))


def _checkpoint_errors() -> tuple[type[BaseException], ...]:
    try:
        from tiermem.engine.checkpoint_format import CheckpointError
    except ImportError:
        return (OSError, ValueError)
    return (OSError, ValueError, CheckpointError)


def _save_checkpoint(engine: Any, directory: Path, step: int, client: dict) -> dict[str, Any]:
    tag = f"step{step}"
    try:
        path = engine.save_checkpoint(os.fspath(directory), tag=tag, client_state=client)
    except NotImplementedError as exc:
        return {"saved": False, "reason": f"checkpoints are unavailable in this engine: {exc}"}
    except _checkpoint_errors() as exc:
        return {"saved": False, "failed": True, "reason": f"failed: {exc}"}
    return {"saved": True, "directory": os.fspath(directory), "tag": tag, "path": os.fspath(path)}


def _load_checkpoint(engine: Any, directory: Path) -> dict[str, Any]:
    try:
        _, client = engine.load_checkpoint(os.fspath(directory))
    except NotImplementedError as exc:
        raise CheckpointUnavailable(
            f"--resume: checkpoints are unavailable in this engine: {exc}"
        ) from exc
    except _checkpoint_errors() as exc:  # FileNotFoundError is an OSError
        raise ResumeError(f"--resume: {exc}") from exc
    return dict(client or {})


def _build(opts: TrainOptions, scratch: Path) -> tuple[GPT, TiermemConfig, Corpus]:
    gpt_cfg = preset(opts.model)
    if opts.seq_len is not None:
        gpt_cfg = GPTConfig(
            vocab_size=gpt_cfg.vocab_size,
            hidden_size=gpt_cfg.hidden_size,
            num_layers=gpt_cfg.num_layers,
            num_heads=gpt_cfg.num_heads,
            seq_len=opts.seq_len,
        )
    shape = RunShape(
        steps=opts.steps,
        micro_batch_size=opts.micro_batch_size,
        lr=DEFAULT_LR,
        scratch=scratch,
        hidden_size=gpt_cfg.hidden_size,
        batch_size=opts.batch_size,
        accumulation=opts.accumulation,
    )
    config = build_run_config(
        shape, config_file=opts.config_file, nvme_override=opts.nvme_path_given
    )
    corpus = load_corpus(opts.corpus_bytes)
    torch.manual_seed(opts.seed)
    return GPT(gpt_cfg), config, corpus


def train(
    opts: TrainOptions,
    *,
    on_start: Callable[[TrainResult], None] | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Run the training described by ``opts`` (see the module docstring).

    ``should_stop`` is asked after each step; when it says so the run stops
    there, saves its checkpoint as at the end (``--resume`` then continues
    with the same schedule) and returns with ``interrupted`` set. A
    ``KeyboardInterrupt`` inside a step stops at once, without a checkpoint.
    The scratch directory is removed at the end (unless ``opts.keep``), also
    when the run fails or is interrupted.

    Raises:
        tiermem.engine.config.ConfigError: a bad config (names the key).
        CheckpointUnavailable: ``resume`` asked for and the engine cannot load.
        ResumeError: ``resume`` and no usable checkpoint for this run.
    """
    import tiermem

    scratch = make_scratch(opts.nvme_path)
    engine = None
    result: TrainResult | None = None
    try:
        model, config, corpus = _build(opts, scratch)
        engine, _, _, _ = tiermem.initialize(model=model, config=config)
        result = TrainResult(
            options=opts,
            model=model.cfg,
            config=config,
            corpus_source=corpus.source,
            corpus_tokens=corpus.num_tokens,
            scratch_dir=scratch,
            scratch_removed=False,
            start_step=0,
            device=str(engine.device),
            world_size=engine.comm.world_size,
            backend=engine.comm.backend,
            batch={
                "global": engine.settings.train_batch_size,
                "micro": engine.settings.micro_batch_size,
                "accumulation": engine.gradient_accumulation_steps,
            },
        )
        history: list[float] = []
        if opts.resume:
            if opts.checkpoint_dir is None:
                raise ResumeError("--resume needs a checkpoint directory")
            client = _load_checkpoint(engine, opts.checkpoint_dir)
            if client.get("model") not in (None, opts.model):
                raise ResumeError(
                    f"--resume: the checkpoint in {opts.checkpoint_dir} is of model "
                    f"{client.get('model')!r}, not {opts.model!r}"
                )
            if client.get("seed", opts.seed) != opts.seed:
                raise ResumeError(
                    f"--resume: the checkpoint in {opts.checkpoint_dir} was trained with "
                    f"--seed {client['seed']}; pass --seed {client['seed']} to continue its batches"
                )
            result.start_step = int(client.get("step", engine.global_steps))
            if result.start_step >= opts.steps:
                raise ResumeError(
                    f"--resume: the checkpoint in {opts.checkpoint_dir} is at step "
                    f"{result.start_step} already; pass --steps above {result.start_step}"
                )
            history = [float(x) for x in client.get("losses", [])][: result.start_step]
            result.prior_losses = history
            saved_batch = client.get("batch_size", result.batch["global"])
            if saved_batch != result.batch["global"]:
                warnings.warn(
                    f"--resume: the checkpoint was trained with {saved_batch} sequences per "
                    f"step and this run has {result.batch['global']}; the loss curve will "
                    "differ from an uninterrupted run (pass --batch-size to keep it)",
                    stacklevel=2,
                )
        if on_start is not None:
            on_start(result)
        _run_steps(engine, corpus, opts, result, on_step, should_stop)
        if opts.checkpoint_dir is not None and result.records:
            client = {
                "step": result.start_step + result.steps_run,
                "model": opts.model,
                "seed": opts.seed,
                "batch_size": result.batch["global"],
                "losses": history + [r.loss for r in result.records],
            }
            result.checkpoint = _save_checkpoint(
                engine, opts.checkpoint_dir, client["step"], client
            )
        elif opts.checkpoint_dir is None:
            result.checkpoint = {"saved": False, "reason": "disabled (--no-checkpoint)"}
        else:
            result.checkpoint = {"saved": False, "reason": "no step was run"}
        _collect_store(engine, result)
        return result
    except KeyboardInterrupt:
        if result is None:
            raise
        result.interrupted = True
        result.checkpoint = {"saved": False, "reason": "interrupted"}
        _collect_store(engine, result)
        return result
    finally:
        if engine is not None:
            engine.close()
        if not opts.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        if result is not None:
            result.scratch_removed = not scratch.exists()


def _collect_store(engine: Any, result: TrainResult) -> None:
    stores = engine_stores(engine)
    result.telemetry = _merge_snapshots(stores)
    result.store_traces = [(s.telemetry.t0, s.telemetry.chrome_trace()) for s in stores]


def _run_steps(
    engine: Any,
    corpus: Corpus,
    opts: TrainOptions,
    result: TrainResult,
    on_step: Callable[[StepRecord], None] | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    stores = engine_stores(engine)
    comm = engine.comm
    gas = engine.gradient_accumulation_steps
    micro = engine.settings.micro_batch_size
    seq_len = result.model.seq_len
    device = engine.device
    before = _merge_snapshots(stores)
    result.clock_origin = min((s.telemetry.t0 for s in stores), default=time.perf_counter())
    t_run = time.perf_counter()
    engine.train()
    for step in range(result.start_step, opts.steps):
        t_step = time.perf_counter()
        lrs = engine.get_lr()
        losses = []
        for m in range(gas):
            idx, tgt = batch_for_step(
                corpus,
                step=step,
                micro=m,
                batch_size=micro,
                seq_len=seq_len,
                seed=opts.seed,
                accumulation=gas,
                rank=comm.rank,
                world_size=comm.world_size,
            )
            idx, tgt = idx.to(device), tgt.to(device)
            t0 = time.perf_counter()
            loss = engine(idx, tgt)
            t1 = time.perf_counter()
            engine.backward(loss)
            t2 = time.perf_counter()
            engine.step()
            t3 = time.perf_counter()
            losses.append(float(loss.detach().float()))
            result.spans += [
                ComputeSpan("forward", step, t0, t1),
                ComputeSpan("backward", step, t1, t2),
                ComputeSpan("step", step, t2, t3),
            ]
        # with several ranks, the mean over all ranks' micro-batches: what one
        # process on the whole batch reports
        loss = comm.all_reduce_scalar(sum(losses) / len(losses), device=device)
        seconds = time.perf_counter() - t_step
        after = _merge_snapshots(stores)
        moved = {
            pair: n - before["bytes_moved"].get(pair, 0) for pair, n in after["bytes_moved"].items()
        }
        tokens = gas * micro * seq_len * comm.world_size
        record = StepRecord(
            step=step + 1,
            loss=loss / comm.world_size,
            lr=lrs[0] if lrs else 0.0,
            seconds=seconds,
            tokens=tokens,
            tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
            bytes_moved=moved,
            stall_seconds=after["stall_seconds"] - before["stall_seconds"],
        )
        before = after
        result.records.append(record)
        result.elapsed_seconds = time.perf_counter() - t_run
        if on_step is not None:
            on_step(record)
        if step + 1 < opts.steps and _stop_agreed(comm, should_stop, device):
            result.interrupted = True
            break


def _stop_agreed(comm: Any, should_stop: Callable[[], bool] | None, device: Any) -> bool:
    """Whether any rank's ``should_stop`` says so.

    [Note: Ctrl-C reaches the ranks one by one, so they could see it after
    different steps; a rank that stopped alone would wait for the others in
    the checkpoint while they wait for it in the next step. So the ranks stop
    together, after the first step at whose end any of them was asked to.]
    """
    stop = should_stop is not None and should_stop()
    if comm.world_size > 1:
        stop = comm.all_reduce_scalar(float(stop), device=device) > 0
    return stop
