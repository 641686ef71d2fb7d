"""What the planner knows about the machine: memory on each tier and the rates that set step time.

Sizes come from torch (GPU memory), psutil (host memory) and the file system
(free space under ``nvme_path``). Rates are measured where that is quick, or
taken from what the user states, or from the last ``tiermem bench`` of the
same file system (saved by ``tiermem bench`` under :func:`bench_result_path`),
and otherwise assumed; each rate records where it came from, and the plan
prints that.

On a machine without CUDA the compute device is the CPU: the "device" tier is
host memory, and the planner counts device and host bytes against the same
RAM.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MachineFacts",
    "bench_result_path",
    "load_bench_result",
    "probe_machine",
    "save_bench_result",
]

MiB = 1 << 20
# [Note: rates used when nothing was measured or stated; deliberately modest
#  (a SATA-class SSD, one memory channel, a few CPU cores, a mid-range GPU's
#  sustained bf16 rate) and labelled "assumed" in the output.]
ASSUMED_NVME_BPS = 1.0e9
ASSUMED_MEMORY_BPS = 1.0e10
ASSUMED_CPU_FLOPS = 5.0e10
ASSUMED_GPU_FLOPS = 1.0e14
ASSUMED_GPU_MEMORY_BPS = 5.0e11
ASSUMED_H2D_BPS = 1.0e10
BENCH_SCHEMA = "tiermem.bench/1"


@dataclass(frozen=True, kw_only=True)
class MachineFacts:
    """Memory per tier (bytes) and rates (bytes or FLOP per second) for one rank.

    Attributes:
        device_kind: ``"cuda"`` or ``"cpu"`` (the compute device).
        device_name: e.g. ``"NVIDIA H200"`` or ``"cpu"``.
        device_bytes: GPU memory; 0 on a CPU-only machine (device = host memory).
        host_bytes: host memory the run may use (psutil's ``available``).
        host_total_bytes: installed host memory.
        nvme_path: where NVMe offload would write (None: no NVMe placement).
        nvme_free_bytes: free space there.
        nvme_read_bps, nvme_write_bps: sequential rates there.
        memory_bps: host memory copy bandwidth (what the CPU Adam is bound by).
        device_memory_bps: the device's memory bandwidth (the optimizer on the device).
        flops: the compute device's sustained matmul rate.
        h2d_bps: host <-> device copy rate (unused when the device is the CPU).
        sources: for each rate, where it came from (measured / bench file / stated / assumed).
    """

    device_kind: str = "cpu"
    device_name: str = "cpu"
    device_bytes: int = 0
    host_bytes: int
    host_total_bytes: int = 0
    nvme_path: str | None = None
    nvme_free_bytes: int = 0
    nvme_read_bps: float = ASSUMED_NVME_BPS
    nvme_write_bps: float = ASSUMED_NVME_BPS
    memory_bps: float = ASSUMED_MEMORY_BPS
    device_memory_bps: float = ASSUMED_MEMORY_BPS
    flops: float = ASSUMED_CPU_FLOPS
    h2d_bps: float = ASSUMED_H2D_BPS
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def device_is_host(self) -> bool:
        """Whether the compute device is the CPU (device and host share the RAM)."""
        return self.device_kind != "cuda"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "device": self.device_kind,
            "device_name": self.device_name,
            "device_bytes": self.device_bytes,
            "device_is_host_memory": self.device_is_host,
            "host_bytes": self.host_bytes,
            "host_total_bytes": self.host_total_bytes,
            "nvme_path": self.nvme_path,
            "nvme_free_bytes": self.nvme_free_bytes,
            "rates": {
                "nvme_read_bytes_per_s": self.nvme_read_bps,
                "nvme_write_bytes_per_s": self.nvme_write_bps,
                "memory_bytes_per_s": self.memory_bps,
                "device_memory_bytes_per_s": self.device_memory_bps,
                "flops": self.flops,
                "host_device_bytes_per_s": self.h2d_bps,
            },
            "sources": dict(self.sources),
        }


# ----------------------------------------------------------------------------- bench results


def bench_result_path() -> Path:
    """Where ``tiermem bench`` keeps its last result: ``$TIERMEM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/tiermem``, else ``~/.cache/tiermem``; file ``bench-last.json``."""
    root = os.environ.get("TIERMEM_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "tiermem")
    return Path(root) / "bench-last.json"


def save_bench_result(result: dict) -> Path:
    """Keep ``result`` (schema ``tiermem.bench/1``) as the last bench result (atomic write)."""
    from tiermem.planning.jsonfile import write_json_atomic

    path = bench_result_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, result, overwrite=True)


def load_bench_result(path: str | os.PathLike | None = None) -> dict | None:
    """The saved bench result with a best configuration, or None if there is none usable."""
    p = Path(path) if path is not None else bench_result_path()
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("schema") != BENCH_SCHEMA:
        return None
    best = doc.get("best")
    if not isinstance(best, dict):
        return None
    try:
        if float(best["read_gbps"]) <= 0 or float(best["write_gbps"]) <= 0:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    doc["_path"] = os.fspath(p)
    return doc


# ----------------------------------------------------------------------------- measurements


def measure_disk(directory: Path, *, size: int = 32 * MiB) -> tuple[float, float]:
    """(read, write) bytes/s of ``directory``: one quick sequential pass each (1 MiB blocks,
    queue depth 16, the default backend), with the disk bench's code."""
    from tiermem import diskbench

    cfg = diskbench.DiskBenchConfig(
        directory=Path(directory),
        size=size,
        block_sizes=(1 * MiB,),
        queue_depths=(16,),
        backends=("auto",),
    )
    result = diskbench.run(cfg)
    best = result["best"]
    return best["read_gbps"] * 1e9, best["write_gbps"] * 1e9


def measure_memory_bandwidth(*, nbytes: int = 64 * MiB, repeats: int = 3) -> float:
    """Host memory bandwidth in bytes/s: the best of ``repeats`` tensor copies (read + write)."""
    import torch

    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # touch the pages first
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best


def measure_flops(device: str = "cpu", *, n: int = 1024, repeats: int = 3) -> float:
    """The compute device's matmul rate in FLOP/s (bf16 on CUDA, fp32 on the CPU)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cuda":
        n = max(n, 4096)
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


# ----------------------------------------------------------------------------- probing


def _gpu() -> tuple[str, str, int]:
    try:
        import torch

        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            props = torch.cuda.get_device_properties(index)
            return "cuda", props.name, int(props.total_memory)
    except Exception:  # noqa: BLE001 - a broken CUDA setup plans for the CPU
        pass
    return "cpu", "cpu", 0


def _nvme_rates(
    nvme_path: Path, *, measure: bool, bench_file: str | os.PathLike | None
) -> tuple[float, float, str]:
    """(read, write, source) for ``nvme_path``: the saved bench of the same mount, else a
    quick measurement, else the assumed rate."""
    from tiermem import diskbench

    saved = load_bench_result(bench_file)
    if saved is not None:
        mount, _ = diskbench.mount_of(nvme_path)
        if bench_file is not None or saved.get("mount_point") == mount:
            best = saved["best"]
            return (
                float(best["read_gbps"]) * 1e9,
                float(best["write_gbps"]) * 1e9,
                f"tiermem bench result {saved['_path']}",
            )
    if measure:
        read, write = measure_disk(nvme_path)
        return read, write, f"measured (32 MiB in {nvme_path})"
    return ASSUMED_NVME_BPS, ASSUMED_NVME_BPS, "assumed"


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (an nvme_path is created when the store opens)."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def probe_machine(
    nvme_path: str | os.PathLike | None,
    *,
    measure: bool = True,
    nvme_bps: float | None = None,
    flops: float | None = None,
    memory_bps: float | None = None,
    bench_file: str | os.PathLike | None = None,
) -> MachineFacts:
    """The facts of this machine. ``measure`` allows the quick measurements (a 32 MiB disk
    pass unless a bench result of that file system is saved, a memory copy, a matmul);
    stated rates (``nvme_bps``, ``flops``, ``memory_bps``) replace measuring them."""
    import psutil

    kind, name, device_bytes = _gpu()
    vm = psutil.virtual_memory()
    sources: dict[str, str] = {
        "device_bytes": "torch.cuda" if kind == "cuda" else "none (the CPU computes)",
        "host_bytes": "psutil available memory",
    }
    path = None if nvme_path is None else Path(nvme_path)
    free = 0
    read = write = ASSUMED_NVME_BPS
    if path is not None:
        free = shutil.disk_usage(_existing(path)).free
        if nvme_bps is not None:
            read = write = float(nvme_bps)
            sources["nvme"] = "stated"
        else:
            read, write, sources["nvme"] = _nvme_rates(path, measure=measure, bench_file=bench_file)
    if memory_bps is not None:
        mem, sources["memory"] = float(memory_bps), "stated"
    elif measure:
        mem, sources["memory"] = measure_memory_bandwidth(), "measured (64 MiB copy)"
    else:
        mem, sources["memory"] = ASSUMED_MEMORY_BPS, "assumed"
    if flops is not None:
        rate, sources["flops"] = float(flops), "stated"
    elif measure:
        rate, sources["flops"] = measure_flops(kind), f"measured (matmul on {kind})"
    else:
        rate = ASSUMED_GPU_FLOPS if kind == "cuda" else ASSUMED_CPU_FLOPS
        sources["flops"] = "assumed"
    return MachineFacts(
        device_kind=kind,
        device_name=name,
        device_bytes=device_bytes,
        host_bytes=int(vm.available),
        host_total_bytes=int(vm.total),
        nvme_path=None if path is None else os.fspath(path),
        nvme_free_bytes=int(free),
        nvme_read_bps=read,
        nvme_write_bps=write,
        memory_bps=mem,
        device_memory_bps=ASSUMED_GPU_MEMORY_BPS if kind == "cuda" else mem,
        flops=rate,
        h2d_bps=ASSUMED_H2D_BPS,
        sources=sources,
    )
