"""What a ``tiermem train`` run reports: the summary (text or JSON) and the ``--report`` directory.

The report directory holds

* ``run.json``: :func:`run_json` with the per-step history (schema ``tiermem.train/1``);
* ``trace.json``: Chrome-trace JSON of the run: the training loop's compute
  phases (forward, backward, optimizer step) and every store's transfers per
  tier pair and its stalls, on one clock (open it in https://ui.perfetto.dev);
* ``loss.png``: the loss per step and its moving average;
* ``timeline.png``: per step, compute time beside the time the loop stalled
  on I/O; under it, the last steps as a timeline of compute and of each
  tier's I/O, read from ``trace.json``, so one sees at a glance whether the
  I/O ran hidden under compute.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tiermem.train.loop import TrainResult

__all__ = [
    "SCHEMA",
    "check_plotting",
    "format_summary",
    "merged_trace",
    "run_json",
    "write_report",
]

SCHEMA = "tiermem.train/1"
_WINDOW = 10  # steps averaged for "first"/"last" loss and the moving average
_ZOOM_STEPS = 3  # steps shown in the timeline's lower panel


def check_plotting() -> None:
    """Raise ``ImportError`` with the fix when matplotlib (for the PNG plots) is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(
            "--report needs matplotlib for its plots: pip install 'tiermem[report]'"
        ) from None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def run_json(result: TrainResult, *, history: bool = True) -> dict[str, Any]:
    """The run as a JSON-ready dict (schema :data:`SCHEMA`); ``history``: one entry per step."""
    records = result.records
    losses = [r.loss for r in records]
    window = min(_WINDOW, max(1, len(losses) // 2))
    tokens = sum(r.tokens for r in records)
    step_seconds = sum(r.seconds for r in records)
    tel = result.telemetry
    zero = result.config.zero_optimization
    m = result.model
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "model": {
            "preset": result.options.model,
            "parameters": m.num_parameters,
            "layers": m.num_layers,
            "hidden_size": m.hidden_size,
            "heads": m.num_heads,
            "seq_len": m.seq_len,
            "vocab_size": m.vocab_size,
        },
        "corpus": {"source": result.corpus_source, "tokens": result.corpus_tokens},
        "device": result.device,
        "ranks": {"world_size": result.world_size, "backend": result.backend},
        "batch": dict(result.batch),
        "offload": {
            "stage": zero.stage,
            "param": zero.offload_param.device,
            "optimizer": zero.offload_optimizer.device,
        },
        "steps": {
            "start": result.start_step,
            "end": result.start_step + len(records),
            "requested": result.options.steps,
            "run": len(records),
        },
        "interrupted": result.interrupted,
        "loss": {
            "first": _mean(losses[:window]),
            "last": _mean(losses[-window:]),
            "min": min(losses) if losses else None,
            "window": window,
        },
        "tokens": tokens,
        "tokens_per_second": tokens / step_seconds if step_seconds > 0 else 0.0,
        "elapsed_seconds": result.elapsed_seconds,
        "io": {
            "bytes_moved": dict(tel.get("bytes_moved", {})),
            "transfers": dict(tel.get("transfers", {})),
            "stall_seconds": tel.get("stall_seconds", 0.0),
            "stall_fraction": (tel.get("stall_seconds", 0.0) / step_seconds)
            if step_seconds > 0
            else 0.0,
            "prefetch_hits": tel.get("prefetch_hits", 0),
            "prefetch_misses": tel.get("prefetch_misses", 0),
            "write_backs": tel.get("write_backs", 0),
            "tiers": tel.get("tiers", {}),
        },
        "checkpoint": dict(result.checkpoint),
        "scratch": {"path": os.fspath(result.scratch_dir), "removed": result.scratch_removed},
        "config": result.config.to_dict(),
    }
    if history:
        out["history"] = [
            {
                "step": r.step,
                "loss": r.loss,
                "lr": r.lr,
                "seconds": r.seconds,
                "tokens_per_second": r.tokens_per_second,
                "bytes_moved": r.bytes_moved,
                "stall_seconds": r.stall_seconds,
            }
            for r in records
        ]
    return out


def merged_trace(result: TrainResult) -> dict[str, Any]:
    """Chrome-trace JSON: the loop's compute spans (pid 2) and each store's tracks (pid 1, ...).

    Every store's timestamps are relative to its own ``telemetry.t0``; they are
    moved onto the run's clock (``result.clock_origin``), which the compute
    spans use too.
    """
    origin = result.clock_origin
    events: list[dict[str, Any]] = []
    for index, (t0, trace) in enumerate(result.store_traces):
        pid = 1 if index == 0 else 10 + index
        shift = (t0 - origin) * 1e6
        for ev in trace.get("traceEvents", []):
            ev = dict(ev, pid=pid)
            if ev.get("ph") == "X":
                ev["ts"] = round(ev["ts"] + shift, 3)
            elif ev.get("name") == "process_name":
                ev["args"] = {"name": f"tiermem store {index}" if index else "tiermem store"}
            events.append(ev)
    events.append({"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "training loop"}})
    events.append(
        {"name": "thread_name", "ph": "M", "pid": 2, "tid": 1, "args": {"name": "compute"}}
    )
    for span in result.spans:
        events.append(
            {
                "name": span.phase,
                "cat": "compute",
                "ph": "X",
                "pid": 2,
                "tid": 1,
                "ts": round((span.start - origin) * 1e6, 3),
                "dur": round(max(span.end - span.start, 0.0) * 1e6, 3),
                "args": {"step": span.step + 1},
            }
        )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def _tracks(trace: dict[str, Any]) -> dict[str, list[tuple[float, float, str]]]:
    """Track name -> [(start s, duration s, event name)] of a Chrome trace."""
    names: dict[tuple[int, int], str] = {}
    procs: dict[int, str] = {}
    for ev in trace["traceEvents"]:
        if ev.get("ph") == "M" and ev["name"] == "thread_name":
            names[(ev["pid"], ev["tid"])] = ev["args"]["name"]
        elif ev.get("ph") == "M" and ev["name"] == "process_name":
            procs[ev["pid"]] = ev["args"]["name"]
    tracks: dict[str, list[tuple[float, float, str]]] = {}
    for ev in trace["traceEvents"]:
        if ev.get("ph") != "X":
            continue
        label = names.get((ev["pid"], ev["tid"]), str(ev["tid"]))
        if procs.get(ev["pid"], "").startswith("tiermem store ") and label != "compute":
            label = f"{label} ({procs[ev['pid']]})"
        tracks.setdefault(label, []).append((ev["ts"] / 1e6, ev["dur"] / 1e6, ev["name"]))
    return tracks


_PHASE_COLORS = {"forward": "#4C72B0", "backward": "#55A868", "step": "#8172B2"}
_IO_COLOR, _STALL_COLOR = "#DD8452", "#C44E52"


def _plot_loss(result: TrainResult, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r.step for r in result.records]
    losses = [r.loss for r in result.records]
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    prior = result.prior_losses
    if prior:
        ax.plot(
            range(1, len(prior) + 1), prior, color="#BBBBBB", linewidth=1, label="before --resume"
        )
    ax.plot(steps, losses, color="#9DB4D9", linewidth=1, label="loss per step")
    if len(losses) >= 2:
        window = min(_WINDOW, len(losses))
        smooth = [
            sum(losses[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1))
            for i in range(len(losses))
        ]
        ax.plot(steps, smooth, color="#1F4E99", linewidth=2, label=f"mean of last {window}")
    m = result.model
    ax.set_title(
        f"tiermem train: {result.options.model} ({m.num_parameters / 1e6:.2f}M parameters), "
        f"byte-level LM"
    )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats per byte)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png")


def _zoom_window(result: TrainResult) -> tuple[float, float, int, int]:
    """(start, end) seconds on the run's clock of the last few steps, and their step range."""
    spans = result.spans
    last = spans[-1].step
    first = max(spans[0].step, last - _ZOOM_STEPS + 1)
    chosen = [s for s in spans if s.step >= first]
    origin = result.clock_origin
    return chosen[0].start - origin, chosen[-1].end - origin, first + 1, last + 1


def _plot_timeline(result: TrainResult, trace: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    tracks = _tracks(trace)
    io_names = sorted(n for n in tracks if n != "compute" and not n.startswith("stall"))
    stall_names = sorted(n for n in tracks if n.startswith("stall"))
    fig = Figure(figsize=(10, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, gridspec_kw={"height_ratios": [1, 1.3]})

    steps = [r.step for r in result.records]
    stall = [r.stall_seconds for r in result.records]
    compute = [max(r.seconds - r.stall_seconds, 0.0) for r in result.records]
    top.bar(steps, compute, color="#4C72B0", width=1.0, label="compute\n(step less stalls)")
    top.bar(steps, stall, bottom=compute, color=_STALL_COLOR, width=1.0, label="stalled on I/O")
    top.set_xlabel("optimizer step")
    top.set_ylabel("seconds")
    total_stall, total = sum(stall), sum(r.seconds for r in result.records)
    share = 100 * total_stall / total if total > 0 else 0.0
    top.set_title(f"time per step: {share:.1f}% of the run stalled on I/O")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    top.grid(alpha=0.3, axis="y")

    if result.spans:
        lo, hi, s_first, s_last = _zoom_window(result)
        rows = ["compute", *io_names, *stall_names]
        for y, name in enumerate(rows):
            bars = [(s, d) for s, d, _ in tracks.get(name, []) if s + d >= lo and s <= hi]
            if name == "compute":
                for phase, color in _PHASE_COLORS.items():
                    chosen = [
                        (s - lo, d)
                        for s, d, ev in tracks.get(name, [])
                        if ev == phase and s + d >= lo and s <= hi
                    ]
                    bottom.broken_barh(chosen, (y - 0.4, 0.8), facecolors=color)
            else:
                color = _STALL_COLOR if name.startswith("stall") else _IO_COLOR
                bottom.broken_barh(
                    [(s - lo, max(d, (hi - lo) / 2000)) for s, d in bars],
                    (y - 0.4, 0.8),
                    facecolors=color,
                )
        bottom.set_yticks(range(len(rows)), labels=rows)
        bottom.set_ylim(len(rows) - 0.5, -0.5)
        bottom.set_xlim(0, hi - lo)
        bottom.set_xlabel("seconds")
        label = f"step {s_first}" if s_first == s_last else f"steps {s_first}-{s_last}"
        bottom.set_title(f"timeline of {label}: compute and I/O per tier pair")
        legend = [Patch(color=c, label=p) for p, c in _PHASE_COLORS.items()]
        legend += [
            Patch(color=_IO_COLOR, label="transfer"),
            Patch(color=_STALL_COLOR, label="stall"),
        ]
        bottom.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        bottom.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(result: TrainResult, directory: Path) -> dict[str, str]:
    """Write run.json, trace.json, loss.png and timeline.png into ``directory`` (created).

    Returns file role -> path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "run": directory / "run.json",
        "trace": directory / "trace.json",
        "loss_plot": directory / "loss.png",
        "timeline_plot": directory / "timeline.png",
    }
    trace = merged_trace(result)
    with open(files["trace"], "w") as fh:
        json.dump(trace, fh)
    _plot_loss(result, files["loss_plot"])
    _plot_timeline(result, trace, files["timeline_plot"])
    doc = run_json(result)
    doc["files"] = {role: os.fspath(p) for role, p in files.items()}
    with open(files["run"], "w") as fh:
        json.dump(doc, fh, indent=2)
    return {role: os.fspath(p) for role, p in files.items()}


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes} min {sec:02d} s"


def format_summary(doc: dict[str, Any]) -> list[str]:
    """The summary lines of a run (from :func:`run_json`)."""
    m, steps, loss, io = doc["model"], doc["steps"], doc["loss"], doc["io"]
    run = f"{steps['run']} steps" + (
        f" (steps {steps['start'] + 1}-{steps['end']})" if steps["start"] else ""
    )
    where = {"none": f"the compute device ({doc['device']})"}
    param, optim = doc["offload"]["param"], doc["offload"]["optimizer"]
    lines = [
        f"model     {m['preset']}: {m['parameters'] / 1e6:.2f}M parameters, {m['layers']} layers, "
        f"hidden {m['hidden_size']}, {m['heads']} heads, sequence {m['seq_len']} bytes",
        f"data      {doc['corpus']['source']}, {_bytes(doc['corpus']['tokens'])}",
        f"offload   ZeRO stage {doc['offload']['stage']}: parameters on "
        f"{where.get(param, param)}, optimizer states on {where.get(optim, optim)}; "
        f"compute on {doc['device']}",
    ]
    batch, ranks = doc.get("batch"), doc.get("ranks", {}).get("world_size", 1)
    if batch:
        split = f"{batch['micro']} per micro-batch x {batch['accumulation']} accumulation"
        if ranks > 1:
            split += f" x {ranks} ranks ({doc['ranks']['backend']})"
        lines.append(f"batch     {batch['global']} sequences per step: {split}")
    if loss["first"] is not None:
        lines.append(
            f"loss      {loss['first']:.3f} -> {loss['last']:.3f} "
            f"(mean of the first and last {loss['window']} steps; min {loss['min']:.3f})"
        )
    lines.append(
        f"speed     {run} in {_duration(doc['elapsed_seconds'])}, "
        f"{doc['tokens_per_second']:,.0f} tokens/s"
        + (" (interrupted)" if doc["interrupted"] else "")
    )
    moved = ", ".join(f"{pair} {_bytes(n)}" for pair, n in io["bytes_moved"].items() if n)
    label = "I/O (rank 0's)" if ranks > 1 else "I/O"  # each rank pages its own shards
    lines.append(f"{label:<9} {moved or 'no bytes moved between tiers'}")
    hits, misses = io["prefetch_hits"], io["prefetch_misses"]
    prefetch = f"; prefetch hits {hits}/{hits + misses}" if hits + misses else ""
    lines.append(
        f"stalls    {io['stall_seconds']:.2f} s waiting on I/O "
        f"({100 * io['stall_fraction']:.1f}% of step time){prefetch}"
    )
    ck = doc["checkpoint"]
    if ck.get("saved"):
        lines.append(f"checkpoint {os.path.join(ck['directory'], ck['tag'])}")
    else:
        lines.append(f"checkpoint skipped: {ck.get('reason', 'unknown')}")
    scratch = doc["scratch"]
    lines.append(f"scratch   {scratch['path']} ({'removed' if scratch['removed'] else 'kept'})")
    if "files" in doc:
        lines.append(f"report    {', '.join(doc['files'].values())}")
    return lines
