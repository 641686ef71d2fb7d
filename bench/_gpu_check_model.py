"""The GPT-style model of ``bench/gpu_check.py``, its size arithmetic, and the run planner.

The planner picks the 4090-sized run: the largest model of :data:`LADDER`
whose training state fits the disk and host memory, whose activations fit
the capped GPU memory, and whose initialisation plus steps fit the time
left. Everything here is arithmetic on documented constants (see
``docs/gpu.md``); none of it needs a GPU, so it is tested on the CPU.

Training state per parameter with ``offload_param`` and ``offload_optimizer``
both on NVMe (ZeRO-Infinity's placement), :data:`STATE_BYTES_PER_PARAM` = 18:

* on disk (:data:`DISK_BYTES_PER_PARAM` = 14): the bf16 parameter shard (2)
  and the fp32 master, exp_avg and exp_avg_sq (12);
* in host memory (:data:`HOST_BYTES_PER_PARAM` = 4): the fp32 gradient
  accumulator, which the engine keeps on the host when the optimizer is
  offloaded; plus, while the model is built, the bf16 weights (2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

GIB = 1 << 30
DISK_BYTES_PER_PARAM = 14
HOST_BYTES_PER_PARAM = 4
BUILD_BYTES_PER_PARAM = 2
STATE_BYTES_PER_PARAM = 18  # 2 bf16 params + 4 fp32 grads + 12 fp32 Adam (master, m, v)
assert STATE_BYTES_PER_PARAM == DISK_BYTES_PER_PARAM + HOST_BYTES_PER_PARAM


@dataclass(frozen=True, kw_only=True)
class GPTShape:
    """The size of a GPT-style model (pre-LN blocks, tied embedding and LM head)."""

    name: str = "custom"
    vocab: int
    hidden: int
    layers: int
    heads: int
    seq: int

    def __post_init__(self) -> None:
        for key in ("vocab", "hidden", "layers", "heads", "seq"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"GPTShape.{key}: expected a positive integer, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(
                f"GPTShape.hidden ({self.hidden}) must be a multiple of heads ({self.heads})"
            )

    def num_params(self) -> int:
        """Parameters of :class:`GPT` with this shape (the tied LM head counted once)."""
        h = self.hidden
        block = 12 * h * h + 13 * h  # qkv, proj, fc, out (+ biases) and two layer norms
        return self.layers * block + self.vocab * h + self.seq * h + 2 * h

    def largest_group(self) -> int:
        """Elements of the largest module's own parameters (one engine group)."""
        h = self.hidden
        return max(self.vocab * h, 4 * h * h + 4 * h, self.seq * h)

    def describe(self) -> str:
        """``name (N params: layers x hidden, heads, vocab, seq)``."""
        return (
            f"{self.name} ({self.num_params() / 1e9:.2f}B params: {self.layers}x{self.hidden}, "
            f"{self.heads} heads, vocab {self.vocab}, seq {self.seq})"
        )


def parse_shape(text: str, *, name: str = "custom") -> GPTShape:
    """A ladder name (``gpt-2.7b``) or ``vocab,hidden,layers,heads,seq``."""
    for shape in LADDER:
        if shape.name == text:
            return shape
    parts = text.split(",")
    if len(parts) != 5:
        names = ", ".join(s.name for s in LADDER)
        raise ValueError(
            f"model shape {text!r}: expected one of {names} or vocab,hidden,layers,heads,seq"
        )
    try:
        vocab, hidden, layers, heads, seq = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"model shape {text!r}: the five fields must be integers") from None
    return GPTShape(name=name, vocab=vocab, hidden=hidden, layers=layers, heads=heads, seq=seq)


def _ladder_shape(name: str, hidden: int, layers: int) -> GPTShape:
    return GPTShape(name=name, vocab=50304, hidden=hidden, layers=layers, heads=hidden // 128,
                    seq=1024)  # fmt: skip


# GPT-3's model sizes (head dim 128) plus a 4B and a 20B step, vocab 50304, sequence 1024.
LADDER: tuple[GPTShape, ...] = (
    _ladder_shape("gpt-125m", 768, 12),
    _ladder_shape("gpt-350m", 1024, 24),
    _ladder_shape("gpt-760m", 1536, 24),
    _ladder_shape("gpt-1.3b", 2048, 24),
    _ladder_shape("gpt-2.7b", 2560, 32),
    _ladder_shape("gpt-4b", 3072, 36),
    _ladder_shape("gpt-6.7b", 4096, 32),
    _ladder_shape("gpt-13b", 5120, 40),
    _ladder_shape("gpt-20b", 6144, 44),
)


# ----------------------------------------------------------------------------- the model


class Block(nn.Module):
    """Pre-LN transformer block: causal self-attention (SDPA) and a GELU MLP."""

    def __init__(self, shape: GPTShape, **factory) -> None:
        super().__init__()
        h = shape.hidden
        self.heads = shape.heads
        self.ln1 = nn.LayerNorm(h, **factory)
        self.qkv = nn.Linear(h, 3 * h, **factory)
        self.proj = nn.Linear(h, h, **factory)
        self.ln2 = nn.LayerNorm(h, **factory)
        self.fc = nn.Linear(h, 4 * h, **factory)
        self.out = nn.Linear(4 * h, h, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(h, dim=-1)
        q, k, v = (z.view(b, t, self.heads, h // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, h))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """A GPT whose ``forward(idx, targets)`` returns the mean next-token loss (fp32).

    ``checkpoint_fn``, when set, runs each block as ``checkpoint_fn(block, x)``
    (the engine's activation checkpointing).
    """

    def __init__(self, shape: GPTShape, **factory) -> None:
        super().__init__()
        self.shape = shape
        self.checkpoint_fn: Callable | None = None
        self.wte = nn.Embedding(shape.vocab, shape.hidden, **factory)
        self.wpe = nn.Embedding(shape.seq, shape.hidden, **factory)
        self.blocks = nn.ModuleList(Block(shape, **factory) for _ in range(shape.layers))
        self.ln_f = nn.LayerNorm(shape.hidden, **factory)
        self.lm_head = nn.Linear(shape.hidden, shape.vocab, bias=False, **factory)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(positions)
        for block in self.blocks:
            x = self.checkpoint_fn(block, x) if self.checkpoint_fn is not None else block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, self.shape.vocab), targets.reshape(-1))


@torch.no_grad()
def build_gpt(
    shape: GPTShape, *, seed: int = 0, dtype: torch.dtype = torch.float32, tiled: bool = False
) -> GPT:
    """The model on the CPU in ``dtype``, GPT-2's initialisation (normal, std 0.02) from ``seed``.

    ``tiled`` fills each weight from one block of 1M normal samples, repeated
    at a per-weight offset: the same statistics at memory-copy speed, for a
    throughput run whose values do not matter (drawing billions of normal
    samples takes minutes on the CPU).

    [Note: built on the meta device and materialised once (``to_empty``), so a
    multi-billion-parameter model is allocated once, in its final dtype, and
    never runs nn.Linear's own (discarded) initialisation.]
    """
    with torch.device("meta"):
        model = GPT(shape, dtype=dtype)
    model.to_empty(device="cpu")
    model.lm_head.weight = model.wte.weight
    gen = torch.Generator().manual_seed(seed)
    block = torch.empty(1 << 20, dtype=dtype).normal_(0.0, 0.02, generator=gen) if tiled else None
    for index, module in enumerate(model.modules()):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            if block is None:
                module.weight.normal_(0.0, 0.02, generator=gen)
            else:
                _fill_tiled(module.weight.view(-1), block, offset=index * 7919)
            if getattr(module, "bias", None) is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
    return model


def _fill_tiled(flat: torch.Tensor, block: torch.Tensor, *, offset: int) -> None:
    """Fill ``flat`` with ``block`` repeated, starting ``offset`` elements into it."""
    n, size = flat.numel(), block.numel()
    offset %= size
    pos = 0
    while pos < n:
        take = min(size - offset, n - pos)
        flat[pos : pos + take].copy_(block[offset : offset + take])
        pos += take
        offset = 0


def count_params(model: nn.Module) -> int:
    """Distinct parameter elements (a tied weight once)."""
    return sum(p.numel() for p in model.parameters())


def make_batches(
    shape: GPTShape, count: int, *, micro_batch: int, seed: int = 1, pool: int = 4
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` (inputs, targets) micro-batches cycling through ``pool`` fixed random ones
    (so a small model's loss falls visibly: it memorises them)."""
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, shape.vocab, (pool, micro_batch, shape.seq + 1), generator=gen)
    return [
        (tokens[i % pool, :, :-1].contiguous(), tokens[i % pool, :, 1:].contiguous())
        for i in range(count)
    ]


# ----------------------------------------------------------------------------- the planner


@dataclass(frozen=True, kw_only=True)
class MachineFacts:
    """What the planner knows about the machine (measured where the check could, else guessed).

    Rates are bytes or elements per second; ``gpu_flops`` is the bf16 rate a
    transformer step reaches on the GPU (not the peak).
    """

    host_ram_bytes: int
    disk_free_bytes: int
    gpu_budget_bytes: int
    nvme_read_bytes_per_s: float = 1.0e9
    nvme_write_bytes_per_s: float = 1.0e9
    d2h_bytes_per_s: float = 5.0e9
    adam_params_per_s: float = 1.0e9
    init_params_per_s: float = 2.5e7
    gpu_flops: float = 2.0e14


@dataclass(frozen=True, kw_only=True)
class PlannerLimits:
    """Shares of each resource the planner may use, and the engine knobs it assumes."""

    ram_fraction: float = 0.75
    disk_fraction: float = 0.85
    time_fraction: float = 0.7
    gpu_fraction: float = 0.7
    host_overhead_bytes: int = 8 * GIB  # CUDA context, Python, torch, the store's index
    gpu_overhead_bytes: int = 1 * GIB  # cuBLAS workspace, allocator fragmentation
    sub_group_size: int = 50_000_000
    prefetch_bucket_size: int = 50_000_000
    param_buffer_count: int = 5
    optimizer_buffer_count: int = 4
    micro_batches: tuple[int, ...] = (32, 16, 8, 4, 2, 1)


@dataclass(frozen=True, kw_only=True)
class RunEstimate:
    """The estimate for one model shape; ``rejected`` says why it does not fit ("" if it does)."""

    shape: GPTShape
    micro_batch: int
    params: int
    disk_bytes: int
    host_bytes: int
    gpu_bytes: int
    init_seconds: float
    step_seconds: float
    total_seconds: float
    rejected: str = ""

    def as_dict(self) -> dict:
        """JSON-ready."""
        return {
            "shape": self.shape.name,
            "params": self.params,
            "micro_batch": self.micro_batch,
            "disk_gib": round(self.disk_bytes / GIB, 2),
            "host_gib": round(self.host_bytes / GIB, 2),
            "gpu_gib": round(self.gpu_bytes / GIB, 2),
            "init_s": round(self.init_seconds, 1),
            "step_s": round(self.step_seconds, 1),
            "total_s": round(self.total_seconds, 1),
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class RunPlan:
    """The chosen estimate (None when nothing fits) and every candidate considered."""

    chosen: RunEstimate | None
    candidates: list[RunEstimate] = field(default_factory=list)


def store_host_bytes(shape: GPTShape, limits: PlannerLimits = PlannerLimits()) -> int:
    """The engine store's host budget for this shape.

    [Note: mirrors the sizing rule in engine/placement.py (buffer counts of
    the largest parameter shard and optimizer sub-group, plus twice the
    prefetch window); an estimate, kept here so the planner needs no engine.]
    """
    largest = shape.largest_group()
    param_bytes = largest * 2
    chunk_bytes = min(limits.sub_group_size, largest) * 12
    prefetch = 2 * max(param_bytes, chunk_bytes)
    return (
        2 * prefetch
        + (limits.param_buffer_count + 1) * param_bytes
        + (max(limits.optimizer_buffer_count, 2) + 1) * chunk_bytes
    )


def gpu_bytes_for(
    shape: GPTShape, micro_batch: int, limits: PlannerLimits = PlannerLimits()
) -> int:
    """GPU memory of a training step with activation checkpointing per block (bf16).

    Gathered parameters (the largest group twice over, current and prefetched,
    with its gradient, plus the prefetch window), each block's checkpointed
    input, one block's activations during its recompute and backward (about
    40 bytes per token and hidden unit), and the logits with their fp32 loss
    and gradient (16 bytes per token and vocabulary entry: bf16 logits, their
    fp32 copy, fp32 log-softmax and the two gradients).
    """
    tokens = micro_batch * shape.seq
    params = 4 * 2 * shape.largest_group() + 2 * 2 * limits.prefetch_bucket_size
    checkpoints = shape.layers * tokens * shape.hidden * 2
    block = tokens * shape.hidden * 40
    logits = tokens * shape.vocab * 16
    return params + checkpoints + block + logits + limits.gpu_overhead_bytes


def choose_micro_batch(
    shape: GPTShape, gpu_budget_bytes: int, limits: PlannerLimits = PlannerLimits()
) -> int | None:
    """The largest micro-batch of ``limits.micro_batches`` whose step fits the GPU share."""
    allowed = gpu_budget_bytes * limits.gpu_fraction
    for micro_batch in sorted(limits.micro_batches, reverse=True):
        if gpu_bytes_for(shape, micro_batch, limits) <= allowed:
            return micro_batch
    return None


def estimate_step_seconds(shape: GPTShape, micro_batch: int, facts: MachineFacts) -> float:
    """One optimizer step, with no overlap assumed (so an upper bound for a good engine).

    NVMe reads: the bf16 shards in forward and again in backward (4 bytes per
    parameter) and the Adam sub-groups (12); writes: the sub-groups back (12)
    and the new bf16 shards (2). Plus the fp32 gradients to the host, the CPU
    Adam pass and 8 x params x tokens FLOPs (forward, backward, recompute).
    """
    p = shape.num_params()
    read = p * (4 + 12) / facts.nvme_read_bytes_per_s
    write = p * (12 + 2) / facts.nvme_write_bytes_per_s
    grads = p * 4 / facts.d2h_bytes_per_s
    adam = p / facts.adam_params_per_s
    compute = 8 * p * micro_batch * shape.seq / facts.gpu_flops
    return read + write + grads + adam + compute


def estimate_init_seconds(shape: GPTShape, facts: MachineFacts) -> float:
    """Building and partitioning the model (``init_params_per_s``) and writing its 14 bytes
    per parameter to NVMe.

    [Note: the default ``init_params_per_s`` (25M/s) is a guess: tiermem.initialize
    of a 124M-parameter model took 20 s (6M/s) on a 2-core machine shared with
    other builds; the 16-core GPU machine should be several times faster.]
    """
    p = shape.num_params()
    return p / facts.init_params_per_s + p * DISK_BYTES_PER_PARAM / facts.nvme_write_bytes_per_s


def estimate_run(
    shape: GPTShape,
    facts: MachineFacts,
    *,
    steps: int,
    seconds_left: float,
    limits: PlannerLimits = PlannerLimits(),
) -> RunEstimate:
    """Whether ``shape`` fits disk, host memory, the GPU cap and the time, with the numbers."""
    p = shape.num_params()
    disk = p * DISK_BYTES_PER_PARAM
    store = store_host_bytes(shape, limits)
    host = p * HOST_BYTES_PER_PARAM + store + limits.host_overhead_bytes
    host_build = p * BUILD_BYTES_PER_PARAM + shape.largest_group() * 4 + limits.host_overhead_bytes
    host = max(host, host_build)
    micro_batch = choose_micro_batch(shape, facts.gpu_budget_bytes, limits)
    mb = micro_batch or 1
    gpu = gpu_bytes_for(shape, mb, limits)
    init = estimate_init_seconds(shape, facts)
    step = estimate_step_seconds(shape, mb, facts)
    total = init + steps * step
    reasons = []
    if disk > facts.disk_free_bytes * limits.disk_fraction:
        reasons.append(
            f"disk: {disk / GIB:.1f} GiB > {limits.disk_fraction:.0%} of "
            f"{facts.disk_free_bytes / GIB:.1f} GiB free"
        )
    if host > facts.host_ram_bytes * limits.ram_fraction:
        reasons.append(
            f"host: {host / GIB:.1f} GiB > {limits.ram_fraction:.0%} of "
            f"{facts.host_ram_bytes / GIB:.1f} GiB"
        )
    if micro_batch is None:
        reasons.append(
            f"gpu: {gpu / GIB:.1f} GiB at micro-batch 1 > {limits.gpu_fraction:.0%} of "
            f"{facts.gpu_budget_bytes / GIB:.1f} GiB"
        )
    if total > seconds_left * limits.time_fraction:
        reasons.append(
            f"time: {total:.0f} s > {limits.time_fraction:.0%} of {seconds_left:.0f} s left"
        )
    return RunEstimate(
        shape=shape,
        micro_batch=mb,
        params=p,
        disk_bytes=disk,
        host_bytes=host,
        gpu_bytes=gpu,
        init_seconds=init,
        step_seconds=step,
        total_seconds=total,
        rejected="; ".join(reasons),
    )


def plan_run(
    facts: MachineFacts,
    *,
    steps: int,
    seconds_left: float,
    ladder: Sequence[GPTShape] = LADDER,
    limits: PlannerLimits = PlannerLimits(),
) -> RunPlan:
    """The largest shape of ``ladder`` (by parameters) that fits everything."""
    if steps < 1:
        raise ValueError(f"steps: expected at least 1, got {steps}")
    ordered = sorted(ladder, key=lambda s: s.num_params())
    candidates = [
        estimate_run(s, facts, steps=steps, seconds_left=seconds_left, limits=limits)
        for s in ordered
    ]
    fitting = [c for c in candidates if not c.rejected]
    return RunPlan(chosen=fitting[-1] if fitting else None, candidates=candidates)


def model_tflops(params: int, tokens: int, seconds: float) -> float:
    """Model TFLOPS as the papers count it: 6 x params x tokens / time (no recompute)."""
    if seconds <= 0 or not math.isfinite(seconds):
        return float("nan")
    return 6.0 * params * tokens / seconds / 1e12
