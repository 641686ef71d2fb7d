"""Shared pieces of the ZeRO engine tests: a tiny GPT, its data, and plain-PyTorch references.

The model: 2 layers, hidden 32, 2 heads, vocab 64, sequence 16, tied
embedding/LM head, layer norm, no dropout. Every run starts from the same
seed, so the engine and the reference start from identical weights.
"""

from __future__ import annotations

import copy
import faulthandler
import functools
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tiermem.train.models import Block, GPTConfig

VOCAB, HIDDEN, LAYERS, HEADS, SEQ = 64, 32, 2, 2, 16
BATCH = 8  # sequences per micro-batch over all ranks
STEPS = 20
LR = 1e-2  # large enough that the trajectory moves visibly in 20 steps


# [Note: the block is the one `tiermem train` uses (same modules in the same
#  order, so the same seed gives the same weights); only the tiny shape and the
#  checkpoint_fn hook below are the tests' own.]
BLOCK_SHAPE = GPTConfig(
    vocab_size=VOCAB, hidden_size=HIDDEN, num_layers=LAYERS, num_heads=HEADS, seq_len=SEQ
)


def _gpt2_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class TinyGPT(nn.Module):
    """A GPT with tied input embedding and LM head; ``forward(idx, targets)`` returns the loss.

    ``checkpoint_fn``, when set, runs each block as ``checkpoint_fn(block, x)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.checkpoint_fn: Callable | None = None
        self.wte = nn.Embedding(VOCAB, HIDDEN)
        self.wpe = nn.Embedding(SEQ, HIDDEN)
        self.blocks = nn.ModuleList(Block(BLOCK_SHAPE) for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(HIDDEN)
        self.lm_head = nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight
        self.register_buffer("positions", torch.arange(SEQ), persistent=False)
        self.apply(_gpt2_init)  # as Hugging Face's post_init does

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(self.positions[: idx.shape[1]])
        for block in self.blocks:
            x = self.checkpoint_fn(block, x) if self.checkpoint_fn is not None else block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, VOCAB), targets.reshape(-1))


def make_model(seed: int = 0) -> TinyGPT:
    """The model with the weights every test starts from."""
    torch.manual_seed(seed)
    return TinyGPT()


def make_batches(n: int, *, batch: int = BATCH, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    """``n`` micro-batches of (inputs, targets) from a fixed random token stream."""
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randint(0, VOCAB, (4, batch, SEQ + 1), generator=gen)
    out = []
    for i in range(n):
        tokens = pool[i % 4]
        out.append((tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()))
    return out


def config(
    *,
    stage: int,
    offload: str = "none",
    offload_param: str = "none",
    precision: str = "fp32",
    gas: int = 1,
    clip: float = 0.0,
    world: int = 1,
    lr: float = LR,
    weight_decay: float = 0.1,
    extra: dict | None = None,
) -> dict:
    """A DeepSpeed-style config dict for the tiny model."""
    cfg = {
        "train_micro_batch_size_per_gpu": BATCH // world,
        "gradient_accumulation_steps": gas,
        "train_batch_size": BATCH * gas,
        "gradient_clipping": clip,
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": lr, "betas": [0.9, 0.99], "eps": 1e-8, "weight_decay": weight_decay},
        },
        "zero_optimization": {
            "stage": stage,
            "offload_optimizer": {"device": offload},
            "offload_param": {"device": offload_param},
            "stage3_param_persistence_threshold": 0,
            "stage3_prefetch_bucket_size": 10_000,
        },
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    if precision == "fp16":
        cfg["fp16"] = {"enabled": True}
    if extra:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
    return cfg


def nvme_offload_config(swap: str | os.PathLike) -> dict:
    """Stage 3 with parameters and Adam states on NVMe under ``swap``: one buffer and
    1000-element sub-groups cut through parameters, so every step reads and writes
    the swap files many times."""
    nvme = {"device": "nvme", "nvme_path": str(swap), "buffer_count": 1}
    cfg = config(stage=3)
    cfg["zero_optimization"].update(
        offload_param=nvme,
        offload_optimizer=nvme,
        sub_group_size=1000,
        sub_group_split_params=True,
    )
    return cfg


def train_steps(
    engine,
    batches: Sequence[tuple[torch.Tensor, ...]],
    losses: list[float] | None = None,
    *,
    before_step: Callable[[], None] | None = None,
) -> list[float]:
    """One forward/backward/step per batch; the losses, appended to ``losses`` as they
    come (so a caller still has the steps done before an error)."""
    losses = [] if losses is None else losses
    for idx, tgt in batches:
        loss = engine(idx, tgt)
        engine.backward(loss)
        if before_step is not None:
            before_step()
        engine.step()
        losses.append(float(loss.detach()))
    return losses


@dataclass(frozen=True, kw_only=True)
class Reference:
    """How the plain-PyTorch reference trains."""

    steps: int = STEPS
    gas: int = 1
    clip: float = 0.0
    lr: float = LR
    weight_decay: float = 0.1
    dtype: torch.dtype = torch.float32


def reference_losses(ref: Reference = Reference(), model: nn.Module | None = None) -> list[float]:
    """Per-micro-step losses of plain torch + ``torch.optim.AdamW``.

    For bf16/fp16 ``dtype`` the usual mixed-precision recipe: the model runs in
    ``dtype``, AdamW updates fp32 master copies, gradients are accumulated in fp32.
    Runs from :func:`make_model` are computed once per process.
    """
    if model is None:
        return list(_cached_reference(ref))
    return _reference_run(ref, model)


@functools.cache
def _cached_reference(ref: Reference) -> tuple[float, ...]:
    return tuple(_reference_run(ref, make_model()))


def _reference_run(ref: Reference, model: nn.Module) -> list[float]:
    batches = make_batches(ref.steps * ref.gas)
    params = list(model.parameters())
    masters = [p.detach().float().clone() for p in params]
    model = model.to(ref.dtype)
    params = list(model.parameters())
    opt = torch.optim.AdamW(
        masters, lr=ref.lr, betas=(0.9, 0.99), eps=1e-8, weight_decay=ref.weight_decay
    )
    losses = []
    for step in range(ref.steps):
        accum = [torch.zeros_like(m) for m in masters]
        for micro in range(ref.gas):
            idx, tgt = batches[step * ref.gas + micro]
            loss = model(idx, tgt)
            losses.append(float(loss.detach()))
            (loss / ref.gas if ref.gas > 1 else loss).backward()
            for a, p in zip(accum, params, strict=True):
                a.add_(p.grad.float())
                p.grad = None
        for m, a in zip(masters, accum, strict=True):
            m.grad = a
        if ref.clip > 0:
            torch.nn.utils.clip_grad_norm_(masters, ref.clip)
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for p, m in zip(params, masters, strict=True):
                p.copy_(m)
    return losses


def engine_losses(
    cfg: dict,
    *,
    steps: int = STEPS,
    rank: int = 0,
    world: int = 1,
    model: nn.Module | None = None,
    after_step: Callable | None = None,
) -> list[float]:
    """Per-micro-step losses of tiermem on ``cfg``; with ``world`` > 1 each rank takes
    its slice of every micro-batch and the returned losses are averaged over ranks."""
    import tiermem

    model = model if model is not None else make_model()
    gas = cfg.get("gradient_accumulation_steps", 1)
    engine, _, _, _ = tiermem.initialize(model=model, config=cfg)
    batches = make_batches(steps * gas)
    per = BATCH // world
    losses = []
    for step in range(steps):
        for micro in range(gas):
            idx, tgt = batches[step * gas + micro]
            idx, tgt = idx[rank * per : (rank + 1) * per], tgt[rank * per : (rank + 1) * per]
            loss = engine(idx, tgt)
            engine.backward(loss)
            engine.step()
            value = loss.detach().float().reshape(1).clone()
            if world > 1:
                torch.distributed.all_reduce(value)
                value /= world
            losses.append(float(value))
        if after_step is not None:
            after_step(engine, step)
    engine.close()
    return losses


def max_rel_diff(a: Sequence[float], b: Sequence[float]) -> float:
    """The largest per-step relative difference between two loss trajectories."""
    assert len(a) == len(b), (len(a), len(b))
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a, b, strict=True))


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out_dir: str, fn: Callable, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    faulthandler.enable()  # a crash in a rank prints its Python stack
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = fn(rank, world, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
        torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()
    # [Note: a rank that finished cleanly leaves without interpreter teardown.
    #  gloo was seen to abort a process at exit ("terminate called without an
    #  active exception", ~1 run in 10-20) after the group was destroyed and
    #  every result saved; that exit-time abort is a known open problem noted
    #  for the engine, not what these tests check.]
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_ranks(fn: Callable, *args, world: int = 2) -> list:
    """Run ``fn(rank, world, *args)`` in ``world`` gloo processes; return each rank's result."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_rank_main, args=(world, free_port(), out_dir, fn, args), nprocs=world)
        return [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(world)]


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy (tied weights stay tied)."""
    return copy.deepcopy(model)
