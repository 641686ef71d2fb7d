"""Adam states with compact moments (bf16 or int8), held and paged at their real size.

With ``optimizer.params.state_dtype`` ``"bf16"`` or ``"int8"`` each sub-group
(at most ``sub_group_size`` elements of one shard) is one byte buffer laid out
``[master fp32 | exp_avg | exp_avg_sq | exp_avg scales | exp_avg_sq scales]``
(:class:`PackedLayout`; scales only for int8, one fp32 per ``quant_block``
elements), 8 bytes per element for bf16 and 6 plus the scales for int8,
against 12 for fp32. :class:`CompactHostShardOptimizer` keeps the buffers in
host memory, :class:`CompactNvmeShardOptimizer` in the store, which then
reads and writes only those bytes each step.

[Note: separate classes rather than a mode of the fp32 ones: the fp32 path
(and its bit-exact parity tests) stays exactly as it was, and these expose
:meth:`state_access` so that checkpoints see fp32 states without knowing the
layout.]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tiermem import adam
from tiermem.engine.checkpoint_state import OptimizerStateAccess
from tiermem.engine.optimizer_step import (
    AdamHyper,
    ShardOptimizer,
    StepItem,
    _host_grad,
    _HostTarget,
    split_by_hyper,
    sub_groups,
)

__all__ = [
    "CompactHostShardOptimizer",
    "CompactNvmeShardOptimizer",
    "PackedLayout",
    "state_bytes_per_element",
]

_ALIGN = 64  # each part starts on a cache line (and at a multiple of its element size)


def _up(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def state_bytes_per_element(state_dtype: str, quant_block: int = adam.QUANT_BLOCK) -> float:
    """Bytes of Adam state per parameter (master included, int8 scales amortised)."""
    adam.check_state_dtype(state_dtype)
    if state_dtype == "fp32":
        return 12.0
    if state_dtype == "bf16":
        return 8.0
    return 6.0 + 8.0 / quant_block


@dataclass(frozen=True)
class PackedLayout:
    """Byte offsets of one sub-group's states in its buffer."""

    n: int
    state_dtype: str
    quant_block: int

    @property
    def moment_size(self) -> int:
        return 2 if self.state_dtype == "bf16" else 1

    @property
    def blocks(self) -> int:
        return -(-self.n // self.quant_block) if self.state_dtype == "int8" else 0

    @property
    def offsets(self) -> tuple[int, int, int, int, int]:
        m = _up(4 * self.n)
        v = m + _up(self.moment_size * self.n)
        sm = v + _up(self.moment_size * self.n)
        sv = sm + _up(4 * self.blocks)
        return 0, m, v, sm, sv

    @property
    def nbytes(self) -> int:
        return self.offsets[4] + _up(4 * self.blocks)

    def views(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Typed views of ``buf`` (uint8, ``nbytes``): master, the moments and, for int8, scales."""
        o_master, o_m, o_v, o_sm, o_sv = self.offsets
        n, size = self.n, self.moment_size
        moment = torch.bfloat16 if self.state_dtype == "bf16" else torch.uint8
        out = {
            "master": buf[o_master : o_master + 4 * n].view(torch.float32),
            "exp_avg": buf[o_m : o_m + size * n].view(moment),
            "exp_avg_sq": buf[o_v : o_v + size * n].view(moment),
        }
        if self.state_dtype == "int8":
            out["exp_avg_absmax"] = buf[o_sm : o_sm + 4 * self.blocks].view(torch.float32)
            out["exp_avg_sq_absmax"] = buf[o_sv : o_sv + 4 * self.blocks].view(torch.float32)
        return out

    def fill(
        self,
        buf: torch.Tensor,
        master: torch.Tensor,
        exp_avg: torch.Tensor,
        exp_avg_sq: torch.Tensor,
    ) -> None:
        """Store fp32 states into ``buf`` (moments rounded or quantized)."""
        views = self.views(buf)
        views["master"].copy_(master.reshape(-1))
        moments = adam.moments_in(
            exp_avg.reshape(-1).float(),
            exp_avg_sq.reshape(-1).float(),
            self.state_dtype,
            self.quant_block,
        )
        for key, view in views.items():
            if key != "master":
                view.copy_(moments[key])

    def as_fp32(self, buf: torch.Tensor) -> dict[str, torch.Tensor]:
        """fp32 copies of master, exp_avg and exp_avg_sq."""
        views = self.views(buf)
        saved = dict(views, quant_block=self.quant_block)
        exp_avg, exp_avg_sq = adam.moments_as_fp32(saved)
        return {"master": views["master"].clone(), "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}

    def update(
        self,
        buf: torch.Tensor,
        grad: torch.Tensor,
        out: torch.Tensor,
        pieces: Sequence[tuple[int, int, AdamHyper]],
        *,
        step: int,
        grad_scale: float,
    ) -> None:
        """The fused step over the sub-group; ``pieces`` are ``[a, b)`` ranges of it
        with their hyperparameters.

        [Note: an int8 scale covers ``quant_block`` elements, so a piece that
        starts inside a block cannot be stepped alone. Then the moments are
        dequantized, stepped in fp32 piece by piece and quantized again: the
        same float operations as the fused kernel (dequantize, update,
        block maximum, nearest code), so the result is bit for bit the same.]
        """
        views = self.views(buf)
        fused = self.state_dtype == "bf16" or (
            len(pieces) == 1 and pieces[0][0] == 0 and pieces[0][1] == self.n
        )
        if fused:
            for a, b, hp in pieces:
                _step(views, grad[a:b], out[a:b], hp, a, b, step, grad_scale, self.quant_block)
            return
        fp32 = self.as_fp32(buf)
        master = views["master"]
        for a, b, hp in pieces:
            part = {"master": master, "exp_avg": fp32["exp_avg"], "exp_avg_sq": fp32["exp_avg_sq"]}
            _step(part, grad[a:b], out[a:b], hp, a, b, step, grad_scale, self.quant_block)
        for key, value in adam.moments_in(
            fp32["exp_avg"], fp32["exp_avg_sq"], "int8", self.quant_block
        ).items():
            if key in views:
                views[key].copy_(value)


def _step(
    views, grad, out, hp: AdamHyper, a: int, b: int, step: int, grad_scale: float, block: int
):
    scales = {}
    if "exp_avg_absmax" in views:
        scales = {
            "exp_avg_absmax": views["exp_avg_absmax"],
            "exp_avg_sq_absmax": views["exp_avg_sq_absmax"],
        }
    adam.adam_step(
        views["master"][a:b],
        views["exp_avg"][a:b],
        views["exp_avg_sq"][a:b],
        grad,
        step=step,
        lr=hp.lr,
        betas=hp.betas,
        eps=hp.eps,
        weight_decay=hp.weight_decay,
        adamw_mode=hp.adamw_mode,
        bias_correction=hp.bias_correction,
        clip_coef=grad_scale,
        param_out=out,
        quant_block=block,
        **scales,
    )


class _CompactBase(ShardOptimizer):
    """Sub-group buffers keyed by (shard key, index); subclasses say where they live."""

    def __init__(
        self, *, sub_group_size: int, state_dtype: str, quant_block: int, split_params: bool = False
    ) -> None:
        if sub_group_size <= 0:
            raise ValueError(f"sub_group_size must be positive, got {sub_group_size}")
        if adam.check_state_dtype(state_dtype) == "fp32":
            raise ValueError("compact optimizer states need state_dtype bf16 or int8")
        self.sub_group_size = int(sub_group_size)
        self.state_dtype = state_dtype
        self.quant_block = adam.check_quant_block(quant_block)
        self.split_params = bool(split_params)
        self._chunks: dict[int, list[tuple[int, int]]] = {}
        self._chunk_index: dict[int, dict[tuple[int, int], int]] = {}

    def layout(self, n: int) -> PackedLayout:
        return PackedLayout(n, self.state_dtype, self.quant_block)

    # where the buffers live
    def _put(self, key: int, index: int, buf: torch.Tensor) -> None:
        raise NotImplementedError

    def _open(self, key: int, index: int) -> torch.Tensor:
        raise NotImplementedError

    def _close(self, key: int, index: int, *, dirty: bool) -> None:
        raise NotImplementedError

    def _forget(self, key: int, index: int) -> None:
        raise NotImplementedError

    def add(self, key: int, master: torch.Tensor, starts: Sequence[int] | None = None) -> None:
        flat = master.detach().reshape(-1).to("cpu", torch.float32)
        chunks = []
        # the same sub-groups as the fp32 tiers: runs of whole parameters (see sub_groups)
        bounds = sub_groups(flat.numel(), self.sub_group_size, starts, split=self.split_params)
        for index, (lo, hi) in enumerate(bounds):
            lay = self.layout(hi - lo)
            buf = torch.zeros(lay.nbytes, dtype=torch.uint8)
            zeros = torch.zeros(hi - lo)
            lay.fill(buf, flat[lo:hi], zeros, zeros)
            self._put(key, index, buf)
            chunks.append((lo, hi))
        self._chunks[key] = chunks
        self._chunk_index[key] = {c: i for i, c in enumerate(chunks)}

    def chunk_index(self, key: int, lo: int, hi: int) -> int | None:
        """The index of sub-group ``[lo, hi)`` of shard ``key``; None if it is not one."""
        return self._chunk_index.get(key, {}).get((lo, hi))

    def step(self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float) -> None:
        for item in items:
            grad = _host_grad(item.open_grad())
            with _HostTarget(item) as out:
                for index, (lo, hi) in enumerate(self._chunks[item.key]):
                    buf = self._open(item.key, index)
                    pieces = [
                        (a - lo, b - lo, hp) for a, b, hp in split_by_hyper(item, hyper, lo, hi)
                    ]
                    self.layout(hi - lo).update(
                        buf, grad[lo:hi], out[lo:hi], pieces, step=item.step, grad_scale=grad_scale
                    )
                    self._close(item.key, index, dirty=True)
            item.close_grad()

    def state(self, key: int) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {"master": [], "exp_avg": [], "exp_avg_sq": []}
        for index, (lo, hi) in enumerate(self._chunks[key]):
            fp32 = self.layout(hi - lo).as_fp32(self._open(key, index))
            self._close(key, index, dirty=False)
            for kind, value in fp32.items():
                parts[kind].append(value)
        return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}

    def drop(self, key: int) -> None:
        self._chunk_index.pop(key, None)
        for index in range(len(self._chunks.pop(key, []))):
            self._forget(key, index)

    def state_access(self) -> OptimizerStateAccess:
        """Chunked fp32 access for checkpoints (one sub-group at a time)."""
        return _CompactAccess(self)


class _CompactAccess(OptimizerStateAccess):
    """fp32 views of compact sub-groups: reads dequantize, writes store back when done.

    [Note: checkpoints hold fp32 states whatever the state dtype, so a run may
    resume with another one; bf16 moments survive the trip exactly, int8 ones
    are re-quantized from their dequantized values.]
    """

    def __init__(self, opt: _CompactBase) -> None:
        self.opt = opt

    def numel(self, key: int) -> int:
        chunks = self.opt._chunks[key]
        return chunks[-1][1] if chunks else 0

    def chunks(self, key: int) -> list[tuple[int, int]]:
        return list(self.opt._chunks[key]) or [(0, 0)]

    def _index(self, key: int, lo: int, hi: int) -> int:
        index = self.opt.chunk_index(key, lo, hi)  # a dict: a checkpoint stays O(sub-groups)
        if index is None:
            raise ValueError(f"[{lo}, {hi}) is not a sub-group of shard {key}")
        return index

    @contextmanager
    def read(self, key: int, lo: int, hi: int) -> Iterator[dict[str, torch.Tensor]]:
        index = self._index(key, lo, hi)
        buf = self.opt._open(key, index)
        try:
            yield self.opt.layout(hi - lo).as_fp32(buf)
        finally:
            self.opt._close(key, index, dirty=False)

    @contextmanager
    def write(self, key: int, lo: int, hi: int, *, step: int) -> Iterator[dict[str, torch.Tensor]]:
        index = self._index(key, lo, hi)
        lay = self.opt.layout(hi - lo)
        host = {
            k: torch.empty(hi - lo, dtype=torch.float32)
            for k in ("master", "exp_avg", "exp_avg_sq")
        }
        yield host
        buf = self.opt._open(key, index)
        ok = False
        try:
            lay.fill(buf, host["master"], host["exp_avg"], host["exp_avg_sq"])
            ok = True
        finally:
            self.opt._close(key, index, dirty=ok)


class CompactHostShardOptimizer(_CompactBase):
    """Compact states in host memory (``offload_optimizer.device: cpu``, or none on a CPU)."""

    placement = "cpu"

    def __init__(
        self,
        *,
        sub_group_size: int,
        state_dtype: str,
        quant_block: int,
        pin_memory: bool = False,
        split_params: bool = False,
    ) -> None:
        super().__init__(
            sub_group_size=sub_group_size,
            state_dtype=state_dtype,
            quant_block=quant_block,
            split_params=split_params,
        )
        self.pin = bool(pin_memory) and torch.cuda.is_available()
        self._bufs: dict[tuple[int, int], torch.Tensor] = {}

    def _put(self, key: int, index: int, buf: torch.Tensor) -> None:
        self._bufs[(key, index)] = buf.pin_memory() if self.pin else buf

    def _open(self, key: int, index: int) -> torch.Tensor:
        return self._bufs[(key, index)]

    def _close(self, key: int, index: int, *, dirty: bool) -> None:
        return None

    def _forget(self, key: int, index: int) -> None:
        self._bufs.pop((key, index), None)

    def close(self) -> None:
        self._bufs.clear()
        self._chunks.clear()
        self._chunk_index.clear()


class CompactNvmeShardOptimizer(_CompactBase):
    """Compact states on NVMe: one store tensor (uint8, the packed layout) per sub-group;
    the step reads sub-group ``i + 1`` while updating ``i``, as the fp32 tier does."""

    placement = "nvme"

    def __init__(
        self,
        store,
        *,
        sub_group_size: int,
        state_dtype: str,
        quant_block: int,
        split_params: bool = False,
    ) -> None:
        super().__init__(
            sub_group_size=sub_group_size,
            state_dtype=state_dtype,
            quant_block=quant_block,
            split_params=split_params,
        )
        self.store = store

    @staticmethod
    def _name(key: int, index: int) -> str:
        return f"adam.{key}.{index}"

    def _put(self, key: int, index: int, buf: torch.Tensor) -> None:
        # [Note: the store keeps float tensors only; the packed bytes travel as
        #  float32 words (every layout is a whole number of cache lines) and are
        #  viewed back as bytes, so the store moves exactly the packed size.]
        words = buf.view(torch.float32)
        self.store.register(self._name(key, index), words.numel(), torch.float32, init=words)

    def _open(self, key: int, index: int) -> torch.Tensor:
        from tiermem.store import TierKind

        return self.store.fetch(self._name(key, index), TierKind.HOST).wait().view(torch.uint8)

    def _close(self, key: int, index: int, *, dirty: bool) -> None:
        self.store.release(self._name(key, index), dirty=dirty)

    def _forget(self, key: int, index: int) -> None:
        self.store.drop(self._name(key, index))

    def step(self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float) -> None:
        from tiermem.store import TierKind

        plan = [
            (item, i, lo, hi) for item in items for i, (lo, hi) in enumerate(self._chunks[item.key])
        ]
        if not plan:
            return
        pending = self.store.fetch(self._name(plan[0][0].key, 0), TierKind.HOST)
        grad = out = target = None
        for pos, (item, index, lo, hi) in enumerate(plan):
            current = pending
            if pos + 1 < len(plan):  # read the next sub-group while this one updates
                nxt = plan[pos + 1]
                pending = self.store.fetch(self._name(nxt[0].key, nxt[1]), TierKind.HOST)
            if index == 0:
                target = _HostTarget(item)
                out = target.__enter__()
                grad = _host_grad(item.open_grad())
            buf = current.wait().view(torch.uint8)
            pieces = [(a - lo, b - lo, hp) for a, b, hp in split_by_hyper(item, hyper, lo, hi)]
            self.layout(hi - lo).update(
                buf, grad[lo:hi], out[lo:hi], pieces, step=item.step, grad_scale=grad_scale
            )
            self._close(item.key, index, dirty=True)  # written back async
            if index == len(self._chunks[item.key]) - 1:
                target.__exit__(None, None, None)
                item.close_grad()

    def close(self) -> None:
        self._chunks.clear()
        self._chunk_index.clear()
