"""Streaming inference benchmark: greedy generation with a GPT whose weights
live on NVMe (tiermem.inference, host budget below the model) against the same
model held in memory.

Cases, each generating the same tokens from the same prompt:

- ``memory``: the plain module in RAM (or on the GPU with ``--device cuda``);
- ``nvme``: ``StreamingModel`` with an NVMe home and a host (and device)
  budget of ``--budget-blocks`` blocks, prefetch of ``--prefetch-blocks``
  blocks;
- ``nvme-no-prefetch``: the same with ``prefetch_bytes=0`` (every unit's read
  is waited for), to show what prefetch hides;
- ``nvme-no-checksum``: ``nvme`` with ``checksum=False`` (no crc32c
  verification of each read on the caller's thread).

Reported per case: tokens/s (new tokens / wall time of ``generate``), the
I/O-wait fraction (store stall time / wall time), NVMe bytes read per token,
whether the tokens equal the in-memory ones. No KV cache: every new token runs
the whole context through every block (one full read of the weights per
token). Each case is built once; a warm-up call (which records the store's
access schedule) precedes ``--repeats`` measured calls, interleaved across
cases; medians are reported. On a shared machine the numbers are noisy.

Usage::

    .venv/bin/python bench/inference.py                   # ~100 MB fp32 model, 40 MB host budget
    .venv/bin/python bench/inference.py --quick           # small, seconds
    .venv/bin/python bench/inference.py --device cuda --hidden 2048 --layers 16 --dtype bf16
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from tiermem.inference import InferenceConfig, StreamingModel
from tiermem.store import StoreConfig, TierKind
from tiermem.train.models import GPT, GPTConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_info, write_results  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def greedy(model: GPT, ids: torch.Tensor, new: int, context: int) -> torch.Tensor:
    """Plain greedy decoding with the in-memory model (no KV cache, like the streamed one)."""
    with torch.no_grad():
        for _ in range(new):
            logits = model(ids[:, -context:])
            ids = torch.cat([ids, logits[:, -1, :].argmax(dim=-1, keepdim=True)], dim=1)
    return ids


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class MemoryCase:
    name = "memory"

    def __init__(self, model: GPT, args: argparse.Namespace) -> None:
        self.model = model.to(args.device).eval()
        self.args = args

    def run(self, prompt: torch.Tensor, new: int) -> tuple[torch.Tensor, dict]:
        _sync(self.args.device)
        t0 = time.perf_counter()
        out = greedy(self.model, prompt.to(self.args.device), new, self.args.seq)
        _sync(self.args.device)
        seconds = time.perf_counter() - t0
        n = new * prompt.shape[0]
        return out.cpu(), {"seconds": seconds, "tokens_per_second": n / seconds}

    def close(self) -> None:
        pass


class StreamCase:
    def __init__(
        self,
        name: str,
        model: GPT,
        args: argparse.Namespace,
        swap: Path,
        *,
        prefetch: int,
        checksum: bool,
    ) -> None:
        self.name = name
        self.args = args
        block = args.block_bytes
        cuda = args.device == "cuda"
        store = StoreConfig(
            host_bytes=int(args.budget_blocks * block) + (64 << 10),
            device_bytes=int(args.budget_blocks * block) + (64 << 10) if cuda else 0,
            nvme_paths=(swap,),
            prefetch_bytes=prefetch,
            checksum=checksum,
            pin_memory=cuda,
        )
        cfg = InferenceConfig(
            store=store,
            home=TierKind.NVME,
            compute_tier=TierKind.DEVICE if cuda else TierKind.HOST,
        )
        t0 = time.perf_counter()
        self.streamed = StreamingModel(model, cfg)
        self.setup_seconds = time.perf_counter() - t0
        self.store_cfg = store

    def run(self, prompt: torch.Tensor, new: int) -> tuple[torch.Tensor, dict]:
        out = self.streamed.generate(prompt, new, max_context=self.args.seq)
        _sync(self.args.device)
        report = self.streamed.report.to_dict()
        report["nvme_bytes_per_token"] = report["bytes_moved"].get("nvme->host", 0) / max(
            report["tokens"], 1
        )
        return out.cpu(), report

    def close(self) -> None:
        self.streamed.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default=str(REPO / "scratch"), help="NVMe scratch parent directory")
    ap.add_argument("--quick", action="store_true", help="small model and few tokens: seconds")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128, help="longest context (position table)")
    ap.add_argument("--vocab", type=int, default=256)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    ap.add_argument("--new", type=int, default=24, help="new tokens per measured call")
    ap.add_argument("--budget-blocks", type=float, default=3.0, help="host budget in blocks")
    ap.add_argument("--prefetch-blocks", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "inference.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.heads, args.seq = 128, 4, 4, 64
        args.prompt, args.new, args.repeats = 8, 8, 2
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the cases; exit 0 when they ran (1 when a streamed case's tokens differ)."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = GPTConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        seq_len=args.seq,
    )
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    base = GPT(cfg).to(dtype).eval()
    esize = torch.empty((), dtype=dtype).element_size()
    args.block_bytes = sum(p.numel() for p in base.blocks[0].parameters()) * esize
    model_bytes = sum(p.numel() for p in base.parameters()) * esize
    prompt = torch.randint(
        0, args.vocab, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1)
    )
    print(
        f"model: GPT {model_bytes / esize / 1e6:.1f}M params, {model_bytes / 2**20:.1f} MiB "
        f"{args.dtype} (block {args.block_bytes / 2**20:.1f} MiB); host budget "
        f"{args.budget_blocks:g} blocks, prefetch {args.prefetch_blocks:g}; device {args.device}; "
        f"{args.new} new tokens x {args.repeats} repeats"
    )
    parent = Path(args.dir)
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-inference-", dir=parent))
    prefetch = int(args.prefetch_blocks * args.block_bytes)
    cases: list = []
    rows: dict[str, list[dict]] = {}
    tokens: dict[str, torch.Tensor] = {}
    try:
        cases.append(MemoryCase(copy.deepcopy(base), args))
        for name, pf, checksum in (
            ("nvme", prefetch, True),
            ("nvme-no-prefetch", 0, True),
            ("nvme-no-checksum", prefetch, False),
        ):
            swap = scratch / name
            swap.mkdir()
            cases.append(
                StreamCase(name, copy.deepcopy(base), args, swap, prefetch=pf, checksum=checksum)
            )
        del base
        for case in cases:  # warm-up: records the store's schedule
            case.run(prompt, 2)
        for _ in range(args.repeats):
            for case in cases:
                out, row = case.run(prompt, args.new)
                rows.setdefault(case.name, []).append(row)
                tokens[case.name] = out
    finally:
        for case in cases:
            case.close()
        shutil.rmtree(scratch, ignore_errors=True)

    summary: dict[str, dict] = {}
    mem_tps = statistics.median(r["tokens_per_second"] for r in rows["memory"])
    print(
        f"{'case':<18} {'tokens/s':>9} {'vs memory':>9} {'I/O wait':>9} {'in hooks':>9} "
        f"{'MiB/token':>10}  equal"
    )
    failed = False
    for case in cases:
        rs = rows[case.name]
        tps = statistics.median(r["tokens_per_second"] for r in rs)
        s = {"tokens_per_second": tps, "ratio_vs_memory": tps / mem_tps, "runs": rs}
        equal = bool(torch.equal(tokens[case.name], tokens["memory"]))
        s["tokens_equal_memory"] = equal
        failed |= not equal
        wait = per_token = hooks = ""
        if case.name != "memory":
            s["io_wait_fraction"] = statistics.median(r["io_wait_fraction"] for r in rs)
            s["hook_fraction"] = statistics.median(r["fetch_seconds"] / r["seconds"] for r in rs)
            s["checksum_fraction"] = statistics.median(
                r["checksum_seconds"] / r["seconds"] for r in rs
            )
            hooks = f"{100 * s['hook_fraction']:.1f}%"
            s["nvme_bytes_per_token"] = statistics.median(r["nvme_bytes_per_token"] for r in rs)
            s["setup_seconds"] = case.setup_seconds
            wait = f"{100 * s['io_wait_fraction']:.1f}%"
            per_token = f"{s['nvme_bytes_per_token'] / 2**20:.1f}"
        summary[case.name] = s
        print(
            f"{case.name:<18} {tps:>9.2f} {tps / mem_tps:>9.2f} {wait:>9} {hooks:>9} "
            f"{per_token:>10}  "
            f"{'yes' if equal else 'NO'}"
        )
    result = {
        "schema": "tiermem.bench.inference/1",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            **machine_info(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        },
        "args": {k: v for k, v in vars(args).items() if k != "json"},
        "model_bytes": model_bytes,
        "cases": summary,
    }
    write_results(args.json, result, indent=1)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
