"""The ``tiermem`` command line.

Exit codes: 0 ok, 1 failure, 2 usage error. Errors are one line on stderr; a
traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


class CliError(Exception):
    """A failure to report as one line (exit code 1)."""


def parse_size(text: str) -> int:
    """'1G', '512M', '64MiB', '4096' -> bytes (binary units)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (expected e.g. 4096, 64M, 1G)")
    value, unit = float(m.group(1)), m.group(2).lower()
    return int(value * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit])


def _size_list(text: str) -> list[int]:
    return [parse_size(t) for t in text.split(",") if t.strip()]


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse exits 2 itself; keep it one line
        raise UsageError(f"{self.prog}: {message}")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _short_bytes(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


# ---- tiermem bench ----


def _add_bench(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="profile a directory for offload (sequential read/write sweeps)",
        description="Profile a directory for offload: sequential read and write sweeps over "
        "block size x queue depth x backend. Prints GB/s, IOPS and latency percentiles "
        "per configuration, then the best configuration as a DeepSpeed-style 'aio' section.",
    )
    p.add_argument(
        "directory",
        nargs="?",
        default=".",
        type=Path,
        help="directory to profile (default: the current directory)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="bytes per test file, e.g. 256M, 1G (default 1G; 64M with --quick)",
    )
    p.add_argument(
        "--quick", action="store_true", help="a few seconds: small file, few configurations"
    )
    p.add_argument("--block-sizes", type=_size_list, default=None, help="e.g. 128K,1M,4M")
    p.add_argument("--queue-depths", type=_int_list, default=None, help="e.g. 4,16,32")
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated: io_uring,libaio,threads (default: all usable)",
    )
    p.add_argument(
        "--json", action="store_true", help="print the result as JSON (schema tiermem.bench/1)"
    )
    p.set_defaults(func=_run_bench)


def _run_bench(args) -> int:
    from tiermem import diskbench

    if args.quick:
        cfg = diskbench.DiskBenchConfig.quick(args.directory, args.size)
    else:
        cfg = diskbench.DiskBenchConfig(directory=args.directory, size=args.size or diskbench.GiB)
    overrides = {}
    if args.block_sizes:
        bad = [b for b in args.block_sizes if b <= 0 or b % 4096]
        if bad:
            raise UsageError(
                f"tiermem bench: --block-sizes: each must be a positive multiple of 4096, got {bad}"
            )
        overrides["block_sizes"] = tuple(args.block_sizes)
    if args.queue_depths:
        if any(q < 1 or q > 4096 for q in args.queue_depths):
            raise UsageError(
                f"tiermem bench: --queue-depths: each must be in 1..4096, got {args.queue_depths}"
            )
        overrides["queue_depths"] = tuple(args.queue_depths)
    if args.backends:
        names = tuple(b.strip() for b in args.backends.split(",") if b.strip())
        bad = [b for b in names if b not in ("auto", "io_uring", "libaio", "threads")]
        if bad:
            raise UsageError(
                f"tiermem bench: --backends: unknown backend {bad[0]!r}; "
                "expected io_uring, libaio, threads"
            )
        overrides["backends"] = names
    if overrides:
        cfg = diskbench.DiskBenchConfig(**{**cfg.__dict__, **overrides})

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err_console = Console(stderr=True)
    with Progress(
        TextColumn("[progress.description]{task.description:<34}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as progress:
        task = progress.add_task("preparing", total=None)

        def on_progress(desc: str, done: int, total: int) -> None:
            progress.update(task, description=desc, completed=done, total=total)

        try:
            result = diskbench.run(cfg, on_progress=on_progress)
        except diskbench.BenchError as exc:
            raise CliError(f"tiermem bench: {exc}") from exc
        except OSError as exc:
            raise CliError(f"tiermem bench: I/O error in {cfg.directory}: {exc}") from exc

    from tiermem.planning.machine import save_bench_result

    try:  # `tiermem plan` takes its NVMe rates from the last result of the same file system
        save_bench_result(result)
    except OSError as exc:
        print(f"tiermem bench: warning: result not saved for tiermem plan: {exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_bench(result)
    return EXIT_OK


def _print_bench(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    console.print(
        f"[bold]{result['directory']}[/bold] on {result['filesystem']} ({result['mount_point']}), "
        f"{_human_bytes(result['free_bytes'])} free, test file {_human_bytes(result['file_size'])}"
    )
    console.print(
        f"O_DIRECT: {'yes' if result['o_direct'] else 'no'} ({result['o_direct_reason']})"
    )
    console.print("kernel interfaces: " + ", ".join(f"{k} {v}" for k, v in result["probe"].items()))
    table = Table(show_lines=False, box=None, pad_edge=False)
    for col in ("backend", "block", "qd", "op", "GB/s", "IOPS", "p50 us", "p99 us", "p99.9 us"):
        table.add_column(col, justify="right" if col not in ("backend", "op") else "left")
    for r in result["results"]:
        lat = r["latency_us"]
        table.add_row(
            r["backend"],
            _short_bytes(r["block_size"]),
            str(r["queue_depth"]),
            r["op"],
            f"{r['gbps']:.2f}",
            f"{r['iops']:.0f}",
            str(lat["p50"]),
            str(lat["p99"]),
            str(lat["p999"]),
        )
    console.print(table)
    best = result["best"]
    if best:
        console.print(
            f"best: {best['backend']}, block {_human_bytes(best['block_size'])}, queue depth "
            f"{best['queue_depth']}: read {best['read_gbps']:.2f} GB/s, "
            f"write {best['write_gbps']:.2f} GB/s"
        )
        console.print("DeepSpeed-style config section (paste into your JSON config):")
        print('"aio": ' + json.dumps(result["aio_config"]["aio"], indent=2))


# ---- tiermem doctor ----


def _add_doctor(sub) -> None:
    p = sub.add_parser(
        "doctor",
        help="check this machine for offload: library, SIMD, io_uring, O_DIRECT, pinning, GPU",
        description="Check that this machine is ready for offload and say how to fix what is not.",
    )
    p.add_argument(
        "directory",
        nargs="?",
        default=".",
        type=Path,
        help="the offload (nvme_path) directory to check (default: the current directory)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (schema tiermem.doctor/1)")
    p.set_defaults(func=_run_doctor)


def _run_doctor(args) -> int:
    from tiermem import doctor

    findings = doctor.run(args.directory.resolve())
    if args.json:
        print(json.dumps(doctor.to_json(findings), indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        style = {"ok": "green", "warn": "yellow", "fail": "bold red"}
        table = Table(box=None, pad_edge=False, show_header=False)
        table.add_column(no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_column(overflow="fold")
        for f in findings:
            s = f.status.value
            table.add_row(f"[{style[s]}]{s.upper():<4}[/]", f.check, f.detail)
            if f.fix:
                table.add_row("", "", f"[dim]fix:[/] {f.fix}")
        Console(width=max(100, Console().width)).print(table)
    failed = [f.check for f in findings if f.status is doctor.Status.FAIL]
    if failed:
        print(f"tiermem doctor: failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


# ---- tiermem train ----

_MODEL_PRESETS = ("tiny", "small", "125m", "350m", "1b", "7b")  # tiermem.train.models.PRESETS


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be in 0..2^63-1, got {value}")
    return value


def _add_train(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a small GPT on built-in text with parameters and optimizer states on NVMe",
        description="Train a GPT-style byte-level language model on text that needs no "
        "download (the Python standard library's docstrings), ZeRO stage 3 with parameters "
        "and optimizer states offloaded to NVMe in a scratch directory. Shows step, loss, "
        "tokens/s, per-tier traffic and I/O stalls; saves a checkpoint at the end and prints "
        "a summary. Under torchrun (torchrun --nproc_per_node N -m tiermem.cli train) each "
        "rank trains on its slice of every batch and rank 0 alone prints. Exit codes: 0 ok, "
        "1 failure, 2 bad arguments or config.",
    )
    p.add_argument(
        "--model",
        choices=_MODEL_PRESETS,
        default="small",
        help="model size preset (default small: 0.84M parameters, minutes on 2 CPU cores; "
        "1b and 7b want a GPU and an NVMe drive)",
    )
    p.add_argument("--steps", type=_positive_int, default=200, help="optimizer steps (default 200)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of weights and batches (default 0)")
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="sequences per optimizer step over all ranks (train_batch_size); each rank "
        "takes batch-size / (grad-accum x ranks) per micro-batch, so the same value gives "
        "the same loss curve on any number of ranks (default: 8 per rank and micro-batch)",
    )
    p.add_argument(
        "--grad-accum",
        type=_positive_int,
        default=None,
        help="micro-batches per optimizer step on each rank (gradient_accumulation_steps; "
        "default 1)",
    )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="a tiermem/DeepSpeed JSON config (keys in docs/config.md); batch size, optimizer "
        "and nvme_path are filled in where it leaves them out",
    )
    p.add_argument(
        "--nvme-path",
        type=Path,
        default=None,
        help="directory for the scratch swap directory (default: the current directory); "
        "replaces nvme_path of --config",
    )
    p.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (removed by default)"
    )
    p.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=Path("tiermem-checkpoints"),
        help="where the final checkpoint is saved and --resume loads from "
        "(default ./tiermem-checkpoints)",
    )
    p.add_argument(
        "--no-checkpoint", action="store_true", help="do not save a checkpoint at the end"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in --checkpoint-dir up to --steps",
    )
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="write run.json, trace.json (Chrome trace), loss.png and timeline.png into DIR",
    )
    p.add_argument(
        "--json", action="store_true", help="print the summary as JSON (schema tiermem.train/1)"
    )
    p.set_defaults(func=_run_train)


def _check_train_args(args) -> None:
    if args.resume and args.no_checkpoint:
        raise UsageError("tiermem train: --resume and --no-checkpoint exclude each other")
    if args.nvme_path is not None and not args.nvme_path.is_dir():
        raise UsageError(f"tiermem train: --nvme-path: {args.nvme_path} is not a directory")
    if args.report is not None and args.report.exists() and not args.report.is_dir():
        raise UsageError(f"tiermem train: --report: {args.report} exists and is not a directory")
    ckpt = args.checkpoint_dir
    if not args.no_checkpoint and ckpt.exists() and not ckpt.is_dir():
        raise UsageError(f"tiermem train: --checkpoint-dir: {ckpt} exists and is not a directory")
    if args.config is not None and not args.config.is_file():
        what = "is a directory" if args.config.is_dir() else "not found"
        raise UsageError(f"tiermem train: --config: {args.config}: {what}")
    if args.resume and not args.checkpoint_dir.is_dir():
        raise UsageError(f"tiermem train: --resume: no checkpoint directory {args.checkpoint_dir}")
    world = _world_size()
    per_step = (args.grad_accum or 1) * world
    if args.config is None and args.batch_size is not None and args.batch_size % per_step:
        ranks = f" x {world} ranks" if world > 1 else ""
        raise UsageError(
            f"tiermem train: --batch-size {args.batch_size} is not a multiple of "
            f"--grad-accum ({args.grad_accum or 1}){ranks}"
        )


def _world_size() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset or not a number)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1") or "1"))
    except ValueError:
        return 1


def _rank_prefix() -> str:
    """``[rank R/N] `` under torchrun with several ranks, else nothing: every rank prints
    its own errors, and the reader must know whose they are."""
    world = _world_size()
    return f"[rank {os.environ.get('RANK', '?')}/{world}] " if world > 1 else ""


class _TrainProgress:
    """Step progress on stderr: a rich bar on a terminal, a line per tenth of the run otherwise."""

    def __init__(self, total: int, *, show: bool = True) -> None:
        from rich.console import Console

        self.total = total
        self.show = show  # with several ranks only rank 0 shows progress
        self.console = Console(stderr=True)
        self.progress = None
        self.every = max(1, total // 10)
        self.first: int | None = None

    def __enter__(self) -> _TrainProgress:
        if self.show and self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.table import Column

            self.progress = Progress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(bar_width=16),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}", table_column=Column(overflow="fold")),
                console=self.console,
                transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task("train", total=self.total, stats="starting")
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start(self, first_step: int) -> None:
        self.first = first_step + 1
        if self.progress is not None:
            self.progress.update(self.task, completed=first_step)

    def step(self, record) -> None:
        if not self.show:
            return
        parts = [f"loss {record.loss:.3f}", f"{record.tokens_per_second:,.0f} tok/s"]
        if record.seconds > 0:
            parts += [
                f"{pair} {n / record.seconds / 1e6:.0f} MB/s"
                for pair, n in record.bytes_moved.items()
            ]
        parts.append(f"stall {1000 * record.stall_seconds:.0f} ms")
        stats = "  ".join(parts)
        if self.progress is not None:
            self.progress.update(self.task, completed=record.step, stats=stats)
        elif record.step in (self.first, self.total) or record.step % self.every == 0:
            # [Note: the run's first step is always shown: it says training
            #  has begun (setup can take a while), and scripts wait on it.]
            print(f"step {record.step}/{self.total}  {stats}", file=sys.stderr, flush=True)


class _GracefulStop:
    """While training: the first Ctrl-C stops after the current step (which then saves its
    checkpoint); a second one interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _GracefulStop:
        try:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: Ctrl-C interrupts at once
            self._previous = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            f"\n{_rank_prefix()}tiermem train: stopping after this step (Ctrl-C again to stop now)",
            file=sys.stderr,
            flush=True,
        )

    def __call__(self) -> bool:
        return self.requested


def _warn_lines(caught: list) -> None:
    for w in caught:
        print(f"tiermem train: warning: {w.message}", file=sys.stderr)
    caught.clear()


def _run_train(args) -> int:
    import torch.distributed as dist

    from tiermem.engine.comm import Communicator, init_distributed_from_env
    from tiermem.engine.rank_agreement import agree

    # [Note: under torchrun the process group starts first, so that an argument
    #  that is wrong on one node only (--nvme-path missing there) stops every
    #  rank with an error naming that rank, instead of leaving the others
    #  waiting at the first collective until the process group times out.]
    ours = not (dist.is_available() and dist.is_initialized())
    init_distributed_from_env()
    comm = Communicator()
    try:
        agree(comm, "checking the command line", lambda: _check_train_args(args))
        return _train_rank(args, comm)
    finally:
        if ours and comm.world_size > 1:
            dist.destroy_process_group()


def _train_rank(args, comm) -> int:
    import warnings

    from tiermem.engine.config import ConfigError
    from tiermem.train.loop import CheckpointUnavailable, ResumeError, TrainOptions, train
    from tiermem.train.report import check_plotting, format_summary, run_json, write_report

    if args.report is not None:
        try:
            check_plotting()
        except ImportError as exc:
            raise CliError(f"tiermem train: {exc}") from exc
    opts = TrainOptions(
        model=args.model,
        steps=args.steps,
        seed=args.seed,
        config_file=args.config,
        nvme_path=args.nvme_path,
        nvme_path_given=args.nvme_path is not None,
        keep=args.keep,
        checkpoint_dir=None if args.no_checkpoint else args.checkpoint_dir,
        resume=args.resume,
        batch_size=args.batch_size,
        accumulation=args.grad_accum,
    )
    lead = comm.rank == 0  # with several ranks, rank 0 alone prints progress and summary
    with (
        warnings.catch_warnings(record=True) as caught,
        _TrainProgress(args.steps, show=lead) as bar,
        _GracefulStop() as stop,
    ):
        warnings.simplefilter("default")

        def on_start(result) -> None:
            if lead:
                _warn_lines(caught)
            caught.clear()
            bar.start(result.start_step)

        try:
            result = train(opts, on_start=on_start, on_step=bar.step, should_stop=stop)
        except ConfigError as exc:
            raise UsageError(f"tiermem train: config: {exc}") from exc
        except ResumeError as exc:
            raise UsageError(f"tiermem train: {exc}") from exc
        except CheckpointUnavailable as exc:
            raise CliError(f"tiermem train: {exc}") from exc
        if lead:
            _warn_lines(caught)
    if result.checkpoint.get("failed"):
        print(
            f"{_rank_prefix()}tiermem train: checkpoint {result.checkpoint['reason']}",
            file=sys.stderr,
        )
    status = 130 if result.interrupted else EXIT_FAILURE if result.checkpoint.get("failed") else 0
    if not lead:
        return status
    doc = run_json(result, history=False)
    if args.report is not None:
        doc["files"] = write_report(result, args.report)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(format_summary(doc)))
    if result.interrupted:
        print(_interrupted_message(), file=sys.stderr)
    return status


# ---- tiermem export ----


def _add_export(sub) -> None:
    p = sub.add_parser(
        "export",
        help="write a checkpoint's weights to safetensors or a Hugging Face folder",
        description="Write the model weights of a tiermem checkpoint to one safetensors file, "
        "or with --hf to a Hugging Face save_pretrained-style folder (config.json + "
        "model.safetensors, or shards + index), one tensor at a time. Exit codes: 0 ok, "
        "1 failure (missing or corrupt checkpoint), 2 bad arguments or OUT exists.",
    )
    p.add_argument("checkpoint", type=Path, help="a checkpoint directory or a save directory")
    p.add_argument("out", type=Path, help="the .safetensors file (or, with --hf, the folder)")
    p.add_argument("--tag", default=None, help="the checkpoint's tag (default: latest)")
    p.add_argument("--hf", action="store_true", help="write a Hugging Face model folder")
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="convert the weights (default: as saved; fp32 uses the fp32 masters)",
    )
    p.add_argument(
        "--max-shard-size",
        type=parse_size,
        default=None,
        help="with --hf: largest file, e.g. 5G (binary units; default: one file)",
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.set_defaults(func=_run_export)


def _run_export(args) -> int:
    from tiermem.engine.checkpoint_format import CheckpointError
    from tiermem.engine.weights_export import export_weights

    if args.max_shard_size is not None and not args.hf:
        raise UsageError("tiermem export: --max-shard-size needs --hf (a single file is not split)")
    if (args.out.exists() or args.out.is_symlink()) and not args.force:
        raise UsageError(f"tiermem export: {args.out} exists; pass --force to replace it")
    try:
        result = export_weights(
            args.checkpoint,
            args.out,
            tag=args.tag,
            hf=args.hf,
            dtype=args.dtype,
            max_shard_size=args.max_shard_size,
            force=args.force,
        )
    except ValueError as exc:
        raise UsageError(f"tiermem export: {exc}") from exc
    except (CheckpointError, OSError) as exc:
        raise CliError(f"tiermem export: {exc}") from exc
    print(
        f"{result.path}: {result.tensors} tensors, {_human_bytes(result.nbytes)} "
        f"({result.dtype}) in {', '.join(result.files)}"
    )
    return EXIT_OK


# ---- entry point ----


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tiermem", description="tiermem: memory-tiering runtime for PyTorch training"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    from tiermem import __version__

    parser.add_argument("--version", action="version", version=f"tiermem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_bench(sub)
    _add_doctor(sub)
    _add_train(sub)
    _add_export(sub)
    from tiermem.plan_cli import add_plan

    add_plan(sub)
    for command in sub.choices.values():  # `tiermem CMD ... --debug` works too
        command.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


class _OnSigterm:
    """SIGTERM unwinds like Ctrl-C (through ``finally``, so scratch files go); remembers it came."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum, frame):
        self.seen = True
        raise KeyboardInterrupt


def _interrupted_message() -> str:
    handler = signal.getsignal(signal.SIGTERM)
    if _world_size() > 1 and getattr(handler, "seen", False):
        return (
            f"{_rank_prefix()}tiermem: interrupted by SIGTERM (torchrun sends it to every "
            "rank when one of them fails; its report names that rank)"
        )
    return f"{_rank_prefix()}tiermem: interrupted"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        # Ctrl-C and SIGTERM both unwind through `finally`, so scratch files go.
        signal.signal(signal.SIGTERM, _OnSigterm())
        return args.func(args)
    except UsageError as exc:
        if debug:
            raise
        print(f"{_rank_prefix()}{exc}", file=sys.stderr)
        return EXIT_USAGE
    except CliError as exc:
        if debug:
            raise
        print(f"{_rank_prefix()}{exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(_interrupted_message(), file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI's one-line error contract
        if debug:
            raise
        print(f"{_rank_prefix()}tiermem: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    # [Note: run as `python -m tiermem.cli`, this file is `__main__`; subcommands in
    #  other modules (plan_cli) import `tiermem.cli`, a second copy whose UsageError
    #  and CliError this copy would not catch. So the installed module runs.]
    from tiermem.cli import main as _installed_main

    sys.exit(_installed_main())
