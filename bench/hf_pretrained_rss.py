"""Peak host memory of loading a sharded Hugging Face folder: tiermem vs transformers.

Writes a random Llama (``--hidden``, ``--layers``) with ``save_pretrained`` in
shards, then loads it in fresh processes, one case each:

- ``tiermem``: ``tiermem.hf.from_pretrained`` with parameters and optimizer on
  NVMe (ZeRO-3), streamed from the shards into the tiers;
- ``transformers``: ``AutoModelForCausalLM.from_pretrained`` (the whole model in
  memory, as a plain user loads it).

Each case reports its peak RSS growth over the RSS after its imports (the
kernel's peak mark ``VmHWM``, reset after the imports through
``/proc/self/clear_refs``). tiermem's is compared with its bound: the stores' host budget
plus the largest tensor of the folder. The peer's growth is about the model's
size; the ratio of the two says how much memory streaming saves.

    .venv/bin/python bench/hf_pretrained_rss.py --json bench/results/hf_rss.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import machine_info, write_results  # noqa: E402

# [Note: the stores' host budget is sized from the offload buffers; DeepSpeed's
#  default buffer_size (1e8 elements) gives a budget far above this model, so
#  the bench sets a small one to make the bound mean something.]
BUFFER_ELEMENTS = 1 << 24


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> int:
    """Reset the kernel's peak-RSS mark (``VmHWM``) to the present RSS, and return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS")


def _write_model(folder: Path, hidden: int, layers: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=8192,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder, max_shard_size="64MB")
    sizes = [p.numel() * p.element_size() for p in model.state_dict().values()]
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "bytes": sum(sizes),
        "largest_tensor_bytes": max(sizes),
    }


def _case(name: str, folder: Path, nvme: Path) -> dict:
    import transformers

    import tiermem  # noqa: F401  (imported before the baseline, as a training script does)

    base = _reset_peak()
    out: dict = {"case": name}
    if name == "tiermem":
        from tiermem.hf import from_pretrained

        offload = {
            "device": "nvme",
            "nvme_path": str(nvme),
            "buffer_count": 2,
            "buffer_size": BUFFER_ELEMENTS,
        }
        config = {
            "train_micro_batch_size_per_gpu": 1,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-4}},
            "zero_optimization": {
                "stage": 3,
                "offload_param": offload,
                "offload_optimizer": offload,
                "stage3_param_persistence_threshold": 0,
            },
        }
        engine, *_ = from_pretrained(transformers.AutoModelForCausalLM, folder, config=config)
        out["host_budget_bytes"] = sum(s.cfg.host_bytes for s in engine.placements.stores)
        peak = _status_bytes("VmHWM")
        engine.close()
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder)
        peak = _status_bytes("VmHWM")
        del model
    out["peak_rss_growth_bytes"] = peak - base
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--nvme", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # a child process: one case, JSON on stdout
        print(json.dumps(_case(args.case, Path(args.folder), Path(args.nvme))))
        return
    before = machine_info()
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        folder, nvme = Path(tmp) / "model", Path(tmp) / "nvme"
        model = _write_model(folder, args.hidden, args.layers)
        cases = {}
        for name in ("tiermem", "transformers"):
            cmd = [
                sys.executable,
                __file__,
                "--case",
                name,
                "--folder",
                str(folder),
                "--nvme",
                str(nvme),
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{name} case failed:\n{done.stderr[-3000:]}")
            cases[name] = json.loads(done.stdout.strip().splitlines()[-1])
    tm, hf = cases["tiermem"], cases["transformers"]
    bound = tm["host_budget_bytes"] + model["largest_tensor_bytes"]
    result = {
        "model": model,
        "cases": cases,
        "bound_bytes": bound,
        "tiermem_growth_over_bound": tm["peak_rss_growth_bytes"] / bound,
        "tiermem_growth_over_transformers": tm["peak_rss_growth_bytes"]
        / hf["peak_rss_growth_bytes"],
        "machine_before": before,
        "machine_after": machine_info(),
    }
    mib = 1 << 20
    print(
        f"model     {model['params'] / 1e6:.0f}M params, {model['bytes'] / mib:.0f} MiB, "
        f"largest tensor {model['largest_tensor_bytes'] / mib:.0f} MiB"
    )
    print(
        f"tiermem   peak RSS +{tm['peak_rss_growth_bytes'] / mib:.0f} MiB "
        f"(host budget {tm['host_budget_bytes'] / mib:.0f} MiB + largest tensor = "
        f"{bound / mib:.0f} MiB: {result['tiermem_growth_over_bound']:.2f}x)"
    )
    print(
        f"peer      transformers from_pretrained +{hf['peak_rss_growth_bytes'] / mib:.0f} MiB "
        f"(tiermem {result['tiermem_growth_over_transformers']:.2f}x of it)"
    )
    if args.json:
        write_results(args.json, result)


if __name__ == "__main__":
    main()
