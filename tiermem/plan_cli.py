"""``tiermem plan``: bytes per tier, fit and step time of each offload placement; the config.

CLI-level code (it reads ``tiermem.train``'s presets); the arithmetic is the
core planner, :mod:`tiermem.planning`. ``tiermem.cli`` registers the
subcommand with :func:`add_plan`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from tiermem.cli import _MODEL_PRESETS, EXIT_FAILURE, EXIT_OK, CliError, UsageError, _positive_int
from tiermem.cli import _human_bytes as _b

__all__ = ["add_plan", "run_plan"]

_DTYPES = {"fp32": 4, "bf16": 2, "fp16": 2}
_SUFFIX = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def _count(text: str) -> int:
    """'125M', '1.3B', '7e9', '840000' -> an integer count."""
    t = text.strip().lower()
    unit = t[-1] if t and t[-1] in "kmbgt" else ""
    try:
        value = float(t[:-1] if unit else t) * _SUFFIX[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 125M, 1.3B, 7e9)") from None
    if not 1 <= value < float("inf"):  # nan and inf too (int(inf) raised OverflowError)
        raise argparse.ArgumentTypeError(f"must be a finite number at least 1, got {text!r}")
    return int(value)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _fraction(text: str) -> float:
    value = _rate(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def add_plan(sub) -> None:
    """Register ``tiermem plan`` on the subparsers ``sub``."""
    p = sub.add_parser(
        "plan",
        help="bytes per tier, fit and step time of each offload placement; the config to use",
        description="Plan where a model's training state goes: for each placement (no "
        "offload; optimizer on CPU; optimizer on NVMe; parameters and optimizer on NVMe) the "
        "bytes on the device, in (pinned) host memory and on NVMe, activations per "
        "micro-batch with and without checkpointing, allocator overhead, whether it fits "
        "and the predicted step time from measured rates; then the recommended config. "
        "Exit codes: 0 ok, 1 nothing fits or a failure, 2 bad arguments or input.",
    )
    model = p.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        choices=_MODEL_PRESETS,
        default=None,
        help="a tiermem train preset (default small)",
    )
    model.add_argument(
        "--params",
        type=_count,
        default=None,
        help="parameter count, e.g. 1.3B (needs --hidden, --layers)",
    )
    model.add_argument(
        "--hf-config", type=Path, default=None, metavar="FILE", help="a Hugging Face config.json"
    )
    p.add_argument("--hidden", type=_positive_int, default=None, help="hidden size (with --params)")
    p.add_argument("--layers", type=_positive_int, default=None, help="layer count (with --params)")
    p.add_argument(
        "--vocab", type=_positive_int, default=None, help="vocabulary (with --params; 50304)"
    )
    p.add_argument(
        "--seq-len",
        type=_positive_int,
        default=None,
        help="tokens per sequence (default: the model's)",
    )
    p.add_argument(
        "--micro-batch", type=_positive_int, default=1, help="sequences per micro-batch (1)"
    )
    p.add_argument("--grad-accum", type=_positive_int, default=1, help="micro-batches per step (1)")
    p.add_argument(
        "--init-context",
        action="store_true",
        help="the model is built inside tiermem.init_context (never whole in host memory)",
    )
    p.add_argument(
        "--ranks-per-host",
        type=_positive_int,
        default=None,
        help="ranks sharing one machine's host memory and NVMe (default: --world-size)",
    )
    p.add_argument("--world-size", type=_positive_int, default=1, help="ranks (1)")
    p.add_argument(
        "--dtype",
        choices=tuple(_DTYPES),
        default=None,
        help="compute dtype (bf16 on CUDA, else fp32)",
    )
    p.add_argument(
        "--state-dtype",
        choices=("fp32", "bf16", "int8"),
        default="fp32",
        help="how Adam's moments are stored (optimizer.params.state_dtype; fp32)",
    )
    p.add_argument(
        "--nvme-path",
        type=Path,
        default=Path("."),
        help="where NVMe offload would write (default: the current directory)",
    )
    p.add_argument(
        "--nvme-bandwidth",
        type=_rate,
        default=None,
        metavar="GBPS",
        help="state the NVMe rate in GB/s",
    )
    p.add_argument(
        "--flops",
        type=_rate,
        default=None,
        metavar="TFLOPS",
        help="state the compute rate in TFLOP/s",
    )
    p.add_argument(
        "--memory-bandwidth",
        type=_rate,
        default=None,
        metavar="GBPS",
        help="state host memory GB/s",
    )
    p.add_argument(
        "--bench-file",
        type=Path,
        default=None,
        help="a `tiermem bench --json` result to take the NVMe rate from",
    )
    p.add_argument(
        "--no-measure",
        action="store_true",
        help="measure nothing (rates not stated or saved are assumed)",
    )
    p.add_argument(
        "--memory-fraction", type=_fraction, default=0.9, help="share of each tier to fill (0.9)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the plan as JSON (schema tiermem.plan/1)"
    )
    p.add_argument(
        "--write", type=Path, default=None, metavar="FILE", help="save the recommended config"
    )
    p.add_argument("--force", action="store_true", help="let --write replace an existing file")
    p.set_defaults(func=run_plan)


def _shape(args):
    from tiermem import planning

    if args.params is not None:
        if args.hidden is None or args.layers is None:
            raise UsageError("tiermem plan: --params needs --hidden and --layers")
        return planning.counted_shape(
            num_params=args.params,
            hidden_size=args.hidden,
            num_layers=args.layers,
            seq_len=args.seq_len or 2048,
            vocab_size=args.vocab or 50304,
        )
    if args.hidden is not None or args.layers is not None or args.vocab is not None:
        raise UsageError("tiermem plan: --hidden, --layers and --vocab go with --params")
    if args.hf_config is not None:
        try:
            return planning.hf_config_shape(args.hf_config)
        except planning.ShapeError as exc:
            raise UsageError(f"tiermem plan: --hf-config: {exc}") from exc
    from tiermem.train.models import preset

    name = args.model or "small"
    cfg = preset(name)
    return planning.gpt_shape(
        name=name,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        seq_len=cfg.seq_len,
    )


def _check_args(args) -> None:
    if not args.nvme_path.is_dir():
        raise UsageError(f"tiermem plan: --nvme-path: {args.nvme_path} is not a directory")
    if args.bench_file is not None and not args.bench_file.is_file():
        raise UsageError(f"tiermem plan: --bench-file: {args.bench_file}: not found")
    if args.write is not None:
        if args.write.exists() and not args.force:
            raise UsageError(f"tiermem plan: --write: {args.write} exists (--force replaces it)")
        if args.write.is_dir():
            raise UsageError(f"tiermem plan: --write: {args.write} is a directory")
        if not args.write.parent.is_dir():
            raise UsageError(f"tiermem plan: --write: no directory {args.write.parent}")


def run_plan(args) -> int:
    """Run ``tiermem plan``."""
    from tiermem import planning
    from tiermem.planning.machine import load_bench_result

    _check_args(args)
    shape = _shape(args)
    if args.bench_file is not None and load_bench_result(args.bench_file) is None:
        raise UsageError(
            f"tiermem plan: --bench-file: {args.bench_file}: not a tiermem.bench/1 result "
            "with a best configuration"
        )
    try:
        machine = planning.probe_machine(
            args.nvme_path.resolve(),
            measure=not args.no_measure,
            nvme_bps=None if args.nvme_bandwidth is None else args.nvme_bandwidth * 1e9,
            flops=None if args.flops is None else args.flops * 1e12,
            memory_bps=None if args.memory_bandwidth is None else args.memory_bandwidth * 1e9,
            bench_file=args.bench_file,
        )
    except OSError as exc:
        raise CliError(f"tiermem plan: measuring {args.nvme_path}: {exc}") from exc
    dtype = args.dtype or ("fp32" if machine.device_is_host else "bf16")
    settings = planning.PlanSettings(
        world_size=args.world_size,
        ranks_per_host=args.ranks_per_host or args.world_size,
        micro_batch_size=args.micro_batch,
        gradient_accumulation_steps=args.grad_accum,
        seq_len=args.seq_len,
        dtype_bytes=_DTYPES[dtype],
        memory_fraction=args.memory_fraction,
        model_built_on_host=not args.init_context,
        state_dtype=args.state_dtype,
    )
    result = planning.plan(shape, machine, settings)
    saved = load_bench_result(args.bench_file)
    aio = (saved or {}).get("aio_config", {}) or {}
    config = planning.recommended_config(result, aio=aio.get("aio"))
    if config is not None and dtype == "fp16":
        config["bf16"] = {"enabled": False}
        config["fp16"] = {"enabled": True}
    if args.json:
        doc = result.as_dict()
        doc["settings"]["dtype"] = dtype
        doc["config"] = config
        print(json.dumps(doc, indent=2))
    else:
        print("\n".join(format_plan(result, dtype=dtype)))
        if config is not None:
            print(json.dumps(config, indent=2))
    if config is None:
        print("tiermem plan: no placement fits this machine", file=sys.stderr)
        return EXIT_FAILURE
    if args.write is not None:
        from tiermem.planning.jsonfile import write_json_atomic

        try:
            write_json_atomic(args.write, config, overwrite=args.force)
        except FileExistsError as exc:
            raise UsageError(
                f"tiermem plan: --write: {args.write} exists (--force replaces it)"
            ) from exc
        except OSError as exc:
            raise CliError(f"tiermem plan: --write: {args.write}: {exc.strerror or exc}") from exc
        print(f"tiermem plan: wrote {os.fspath(args.write)}", file=sys.stderr)
    return EXIT_OK


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def format_plan(result, *, dtype: str) -> list[str]:
    """The plan as lines of text."""
    m, s, shape = result.machine, result.settings, result.shape
    src = m.sources
    lines = [f"model     {shape.describe()}"]
    if m.device_is_host:
        lines.append(
            "device    no CUDA: the CPU computes, so the device tier is host memory (device "
            f"and host bytes share {_b(m.host_bytes)} available of {_b(m.host_total_bytes)})"
        )
    else:
        lines.append(
            f"device    {m.device_name}: {_b(m.device_bytes)}; host {_b(m.host_bytes)} "
            f"available of {_b(m.host_total_bytes)}"
        )
    if m.nvme_path is not None:
        lines.append(
            f"nvme      {m.nvme_path}: {_b(m.nvme_free_bytes)} free; read "
            f"{m.nvme_read_bps / 1e9:.2f} GB/s, write {m.nvme_write_bps / 1e9:.2f} GB/s "
            f"({src.get('nvme', 'assumed')})"
        )
    lines.append(
        f"rates     memory {m.memory_bps / 1e9:.1f} GB/s ({src.get('memory')}); compute "
        f"{m.flops / 1e9:,.1f} GFLOP/s ({src.get('flops')})"
    )
    seq = s.seq_len or shape.seq_len
    lines.append(
        f"run       micro-batch {s.micro_batch_size} x {seq} tokens, "
        f"{s.gradient_accumulation_steps} micro-batch(es) per step, {dtype}, "
        f"{s.world_size} rank(s), {s.ranks_per_host} per machine; ZeRO stage 3; bytes per rank"
    )
    lines.append("")
    head = (
        f"{'placement':<29}{'device':>11}{'host':>11}{'pinned':>11}{'nvme':>11}"
        f"{'act/mb':>11}{'ckpt':>11}{'overhead':>11}  {'fits':<9}{'step':>10}"
    )
    lines.append(head)
    for e in result.estimates:
        fit = "yes" if e.fits and not e.needs_checkpointing else "ckpt" if e.fits else "no"
        lines.append(
            f"{e.placement.value:<29}{_b(e.device.total):>11}{_b(e.host.total):>11}"
            f"{_b(e.pinned_bytes):>11}{_b(e.nvme.total):>11}{_b(e.activations):>11}"
            f"{_b(e.activations_checkpointed):>11}{_b(e.overhead):>11}  {fit:<9}"
            f"{_seconds(e.seconds):>10}"
        )
    lines.append(
        "  device: model state and gathered parameters on the compute device; act/mb and "
        "ckpt: activations per micro-batch without and with activation checkpointing; "
        "overhead: allocator share and runtime; fits: yes, ckpt (with checkpointing) or no; "
        "step: predicted, I/O overlapped (serial sum in --json)"
    )
    for e in result.estimates:
        for reason in e.reasons:
            lines.append(f"  {e.placement.value}: {reason}")
    lines.append("")
    rec = result.recommended
    if rec is None:
        lines.append("recommended: nothing fits (see the reasons above)")
        return lines
    parts = ", ".join(f"{k} {_seconds(v)}" for k, v in rec.time_parts.items() if v > 0)
    lines.append(
        f"recommended: {rec.placement.value} (the fastest that fits: {_seconds(rec.seconds)} "
        f"a step; {parts})"
    )
    for tier, tb in (("device", rec.device), ("host", rec.host), ("nvme", rec.nvme)):
        if tb.items:
            items = ", ".join(f"{k} {_b(v)}" for k, v in tb.items.items())
            lines.append(f"  {tier}: {items}")
    if rec.needs_checkpointing:
        lines.append("  needs activation checkpointing (the model's blocks recomputed in backward)")
    lines.append("config (tiermem plan --write ds_config.json saves it):")
    return lines
