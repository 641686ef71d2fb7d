"""Collectives on flat buffers, for one rank without a process group or many over torch.distributed.

The engine moves parameters and gradients as flat 1-D buffers whose length
divides by the world size; rank ``r`` owns the contiguous shard
``[r * S, (r + 1) * S)``. :class:`Communicator` offers the three collectives
ZeRO needs on such buffers (all-gather of shards into the flat buffer,
reduce-scatter of the flat buffer into shards, all-reduce) and does them as
plain copies when the world size is 1, so a single process needs no
``init_process_group``.

[Note: gloo had no reduce-scatter before torch 2.6 or so. The first call tries
the backend's native reduce-scatter; if the backend refuses (a RuntimeError
raised locally on every rank before any data moves), the communicator falls
back for good to all-reduce of a copy of the flat buffer followed by taking
this rank's slice: twice the traffic of a real reduce-scatter but the same
result, and only on CPU backends where bandwidth is not the limit.]
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist

__all__ = ["Communicator", "Pending", "init_distributed_from_env"]


class Pending:
    """A collective in flight; :meth:`wait` blocks until it is done and runs its finisher."""

    def __init__(self, work=None, finish: Callable[[], None] | None = None) -> None:
        self._work = work
        self._finish = finish
        self._done = False

    def wait(self) -> None:
        """Block until the collective has finished (a no-op after the first call)."""
        if self._done:
            return
        if self._work is not None:
            self._work.wait()
        if self._finish is not None:
            self._finish()
        self._work = self._finish = None  # hold no finished work (or its tensors) any longer
        self._done = True

    @property
    def done(self) -> bool:
        """Whether :meth:`wait` has completed."""
        return self._done


def init_distributed_from_env() -> bool:
    """Start the default process group when launched by torchrun with more than one rank.

    Uses NCCL when CUDA is available, gloo otherwise. Returns whether a process
    group is initialized afterwards. Does nothing for ``WORLD_SIZE`` unset or 1.
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1") or "1")
    if world <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return True


def _find(*names: str):
    for name in names:
        fn = getattr(dist, name, None)
        if fn is not None:
            return fn
    return None


class Communicator:
    """Flat-buffer collectives over one process group (or none: world size 1).

    ``group`` is a process group; ``None`` means the default group when
    torch.distributed is initialized, and a single rank otherwise. Gradients
    are averaged over the ranks by :meth:`reduce_scatter_flat` and
    :meth:`all_reduce` with ``average=True``: each rank scales its
    contribution by ``1 / world_size`` before the sum.
    """

    def __init__(self, group=None) -> None:
        self._distributed = dist.is_available() and dist.is_initialized()
        self.group = group if self._distributed else None
        if self._distributed:
            self.rank = dist.get_rank(self.group)
            self.world_size = dist.get_world_size(self.group)
            self.backend = str(dist.get_backend(self.group))
        else:
            self.rank, self.world_size, self.backend = 0, 1, "none"
        self._native_reduce_scatter = True
        self._all_gather_fn = _find("all_gather_single", "all_gather_into_tensor")
        self._reduce_scatter_fn = _find("reduce_scatter_single", "reduce_scatter_tensor")

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, world={self.world_size}, backend={self.backend})"

    def shard_bounds(self, padded_numel: int) -> tuple[int, int]:
        """This rank's ``[start, end)`` in a flat buffer of ``padded_numel`` elements."""
        if padded_numel % self.world_size:
            raise ValueError(
                f"a flat buffer of {padded_numel} elements does not divide into "
                f"{self.world_size} shards; pad it to a multiple of the world size"
            )
        size = padded_numel // self.world_size
        return self.rank * size, (self.rank + 1) * size

    def _check_flat(self, flat: torch.Tensor, shard: torch.Tensor, what: str) -> None:
        if flat.dim() != 1 or shard.dim() != 1 or not flat.is_contiguous():
            raise ValueError(f"{what}: flat and shard must be contiguous 1-D tensors")
        if flat.numel() != shard.numel() * self.world_size:
            raise ValueError(
                f"{what}: flat buffer has {flat.numel()} elements, expected "
                f"{shard.numel()} x {self.world_size} ranks"
            )

    def all_gather_flat(
        self, flat: torch.Tensor, shard: torch.Tensor, *, async_op: bool = False
    ) -> Pending:
        """Fill ``flat`` with every rank's ``shard`` in rank order.

        ``shard`` may be this rank's slice of ``flat`` itself (in place).
        Returns a :class:`Pending`; with ``async_op=False`` it is already done.
        """
        self._check_flat(flat, shard, "all_gather_flat")
        if shard.dtype != flat.dtype or shard.device != flat.device:
            shard = shard.to(device=flat.device, dtype=flat.dtype, non_blocking=True)
        if self.world_size == 1:
            if shard.data_ptr() != flat.data_ptr():
                flat.copy_(shard)
            pending = Pending()
            pending.wait()
            return pending
        start, end = self.shard_bounds(flat.numel())
        if self.backend != "nccl" and shard.data_ptr() == flat[start:end].data_ptr():
            shard = shard.clone()  # only NCCL documents in-place all-gather
        work = self._all_gather_fn(flat, shard, group=self.group, async_op=async_op)
        pending = Pending(work if async_op else None)
        if not async_op:
            pending.wait()
        return pending

    def reduce_scatter_flat(
        self,
        shard_out: torch.Tensor,
        flat: torch.Tensor,
        *,
        average: bool = True,
        async_op: bool = False,
    ) -> Pending:
        """Write the sum (or mean) over ranks of ``flat``'s slice for this rank into ``shard_out``.

        ``flat`` may be modified (scaled in place when averaging).
        """
        self._check_flat(flat, shard_out, "reduce_scatter_flat")
        if average and self.world_size > 1:
            flat.mul_(1.0 / self.world_size)
        if self.world_size == 1:
            shard_out.copy_(flat)
            pending = Pending()
            pending.wait()
            return pending
        if self._native_reduce_scatter and self._reduce_scatter_fn is not None:
            try:
                work = self._reduce_scatter_fn(
                    shard_out, flat, op=dist.ReduceOp.SUM, group=self.group, async_op=async_op
                )
            except RuntimeError:
                self._native_reduce_scatter = False
            else:
                pending = Pending(work if async_op else None)
                if not async_op:
                    pending.wait()
                return pending
        start, end = self.shard_bounds(flat.numel())
        work = dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group, async_op=async_op)
        pending = Pending(work if async_op else None, lambda: shard_out.copy_(flat[start:end]))
        if not async_op:
            pending.wait()
        return pending

    def all_reduce(
        self, tensor: torch.Tensor, *, average: bool = False, async_op: bool = False
    ) -> Pending:
        """Sum (or average) ``tensor`` over the ranks, in place."""
        if self.world_size > 1:
            if average:
                tensor.mul_(1.0 / self.world_size)
            work = dist.all_reduce(
                tensor, op=dist.ReduceOp.SUM, group=self.group, async_op=async_op
            )
            pending = Pending(work if async_op else None)
        else:
            pending = Pending()
        if not async_op:
            pending.wait()
        return pending

    def all_reduce_scalar(self, value: float, *, device: torch.device | str = "cpu") -> float:
        """The sum over ranks of a Python float (float64 on the wire)."""
        if self.world_size == 1:
            return float(value)
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        return float(t.item())

    def broadcast(self, tensor: torch.Tensor, *, src: int = 0) -> None:
        """Copy ``tensor`` from rank ``src`` (a group rank) to every rank, in place."""
        if self.world_size > 1:
            if self.group is not None:
                src = dist.get_global_rank(self.group, src)
            dist.broadcast(tensor, src=src, group=self.group)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            dist.barrier(group=self.group)
