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

[Note: a collective that fails (a rank died, so gloo's connection to it
closed, or a rank hung past the process group's timeout) raises
:class:`CollectiveError`, which names this rank and, after a short roll call
through the rendezvous store, the ranks that did not answer. The bare backend
error names neither.]
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "CollectiveError",
    "Communicator",
    "Pending",
    "init_distributed_from_env",
    "process_group_timeout",
]

TIMEOUT_ENV = "TIERMEM_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
ROLL_CALL_S = 5.0  # how long a rank that saw a collective fail waits for the others to answer


class CollectiveError(RuntimeError):
    """A collective failed: another rank died, was killed, or hung past the timeout."""


def process_group_timeout() -> datetime.timedelta:
    """The process group's timeout: ``TIERMEM_DIST_TIMEOUT`` seconds, else 10 minutes.

    [Note: torch's default for gloo is 30 minutes, so a rank stuck waiting on a
    dead or hung peer (the peer's node lost, a rank that never reaches the
    next collective) sat silent for half an hour. Ten minutes is NCCL's
    default and longer than any single phase of a step or a checkpoint.]
    """
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV}: expected a positive number of seconds, got {text!r}")
    return datetime.timedelta(seconds=seconds)


class Pending:
    """A collective in flight; :meth:`wait` blocks until it is done and runs its finisher."""

    def __init__(
        self,
        work=None,
        finish: Callable[[], None] | None = None,
        on_error: Callable[[RuntimeError], BaseException] | None = None,
    ) -> None:
        self._work = work
        self._finish = finish
        self._on_error = on_error
        self._done = False

    def wait(self) -> None:
        """Block until the collective has finished (a no-op after the first call)."""
        if self._done:
            return
        if self._work is not None:
            try:
                self._work.wait()
            except RuntimeError as exc:
                if self._on_error is None:
                    raise
                raise self._on_error(exc) from exc
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

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` (torch's
    ``env://``); uses NCCL when CUDA is available, gloo otherwise, with
    :func:`process_group_timeout`. Returns whether a process group is
    initialized afterwards. Does nothing for ``WORLD_SIZE`` unset or 1.
    """
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    text = os.environ.get("WORLD_SIZE", "1") or "1"
    try:
        world = int(text)
    except ValueError:
        raise ValueError(f"WORLD_SIZE: expected a positive integer, got {text!r}") from None
    if world <= 1:
        return False
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is {world} but {', '.join(missing)} not set: launch each process "
            "with torchrun (python -m torch.distributed.run), which sets them"
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":  # before any collective: NCCL needs one GPU per rank of a node
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0") or "0"))
    dist.init_process_group(backend=backend, timeout=process_group_timeout())
    return True


def _default_store():
    """The rendezvous store of the default process group, or None where torch hides it."""
    from torch.distributed import distributed_c10d

    getter = getattr(distributed_c10d, "_get_default_store", None)
    try:
        return getter() if getter is not None else None
    except (RuntimeError, ValueError):
        return None


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
        self._roll_called = False
        self._native_reduce_scatter = True
        self._all_gather_fn = _find("all_gather_single", "all_gather_into_tensor")
        self._reduce_scatter_fn = _find("reduce_scatter_single", "reduce_scatter_tensor")

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, world={self.world_size}, backend={self.backend})"

    # -- failures -----------------------------------------------------------------------------
    def _global_ranks(self) -> list[int]:
        if self.group is None:
            return list(range(self.world_size))
        return list(dist.get_process_group_ranks(self.group))

    def _roll_call(self) -> list[int] | None:
        """The group's ranks that do not answer within ``ROLL_CALL_S`` (None: no store).

        Every rank that saw a collective fail writes its key to the rendezvous
        store and waits for the others' keys; a dead rank never writes its own.
        [Note: one roll call per process: a rank that answered once and died
        later would be counted alive; the first failure is the one that matters.]
        """
        store = _default_store()
        if store is None:
            return None
        ranks = self._global_ranks()
        me = ranks[self.rank]
        try:
            if not self._roll_called:
                store.set(f"tiermem/alive/{me}", "1")
                self._roll_called = True
            deadline = time.monotonic() + ROLL_CALL_S
            missing = [r for r in ranks if r != me]
            while missing:
                missing = [r for r in missing if not store.check([f"tiermem/alive/{r}"])]
                if not missing or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        except (RuntimeError, OSError):  # the store is gone with the process that held it
            return None
        return missing

    def _lost(self, what: str, exc: RuntimeError) -> CollectiveError:
        """The error to raise for a failed collective ``what`` (names this rank and the lost)."""
        ranks = self._global_ranks()
        me = f"rank {ranks[self.rank]} of {len(ranks)}"
        silent = self._roll_call()
        if silent is None:
            who = (
                "the rendezvous store cannot be reached either, so rank 0 or the "
                "launcher has stopped"
            )
        elif silent:
            names = ", ".join(str(r) for r in silent)
            who = (
                f"rank{'s' if len(silent) > 1 else ''} {names} did not answer within "
                f"{ROLL_CALL_S:.0f} s: dead, killed, or stuck"
            )
        else:
            who = "every rank answered afterwards, so a rank failed and went on (see its error)"
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CollectiveError(f"{me}: {what} failed: {who} ({self.backend} said: {detail})")

    def _collective(self, what: str, call: Callable[[], object]):
        try:
            return call()
        except RuntimeError as exc:
            raise self._lost(what, exc) from exc

    def _pending(self, what: str, work, finish: Callable[[], None] | None = None) -> Pending:
        return Pending(work, finish, on_error=lambda exc: self._lost(what, exc))

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
        work = self._collective(
            "all_gather",
            lambda: self._all_gather_fn(flat, shard, group=self.group, async_op=async_op),
        )
        pending = self._pending("all_gather", work if async_op else None)
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
                pending = self._pending("reduce_scatter", work if async_op else None)
                if not async_op:
                    pending.wait()
                return pending
        start, end = self.shard_bounds(flat.numel())
        work = self._collective(
            "reduce_scatter (as all_reduce)",
            lambda: dist.all_reduce(
                flat, op=dist.ReduceOp.SUM, group=self.group, async_op=async_op
            ),
        )
        pending = self._pending(
            "reduce_scatter (as all_reduce)",
            work if async_op else None,
            lambda: shard_out.copy_(flat[start:end]),
        )
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
            work = self._collective(
                "all_reduce",
                lambda: dist.all_reduce(
                    tensor, op=dist.ReduceOp.SUM, group=self.group, async_op=async_op
                ),
            )
            pending = self._pending("all_reduce", work if async_op else None)
        else:
            pending = Pending()
        if not async_op:
            pending.wait()
        return pending

    def _wire_device(self, device: torch.device | str | None) -> torch.device | str:
        """``device``, else where this backend moves small tensors (NCCL: this rank's GPU)."""
        if device is not None:
            return device
        if self.backend == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return "cpu"

    def all_reduce_scalar(self, value: float, *, device: torch.device | str | None = None) -> float:
        """The sum over ranks of a Python float (float64 on the wire)."""
        if self.world_size == 1:
            return float(value)
        t = torch.tensor([value], dtype=torch.float64, device=self._wire_device(device))
        self._collective(
            "all_reduce", lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)
        )
        return float(t.item())

    def all_gather_bytes(
        self, data: bytes, *, device: torch.device | str | None = None
    ) -> list[bytes]:
        """Every rank's ``data`` (any lengths), in rank order."""
        if self.world_size == 1:
            return [bytes(data)]
        device = self._wire_device(device)
        length = torch.tensor([len(data)], dtype=torch.int64, device=device)
        lengths = [torch.zeros_like(length) for _ in range(self.world_size)]
        self._collective("all_gather", lambda: dist.all_gather(lengths, length, group=self.group))
        longest = max(int(n.item()) for n in lengths)
        mine = torch.zeros(max(longest, 1), dtype=torch.uint8)
        if data:
            mine[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        mine = mine.to(device)
        parts = [torch.zeros_like(mine) for _ in range(self.world_size)]
        self._collective("all_gather", lambda: dist.all_gather(parts, mine, group=self.group))
        return [
            bytes(p[: int(n.item())].cpu().numpy().tobytes())
            for p, n in zip(parts, lengths, strict=True)
        ]

    def broadcast(self, tensor: torch.Tensor, *, src: int = 0) -> None:
        """Copy ``tensor`` from rank ``src`` (a group rank) to every rank, in place."""
        if self.world_size > 1:
            if self.group is not None:
                src = dist.get_global_rank(self.group, src)
            self._collective("broadcast", lambda: dist.broadcast(tensor, src=src, group=self.group))

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.world_size > 1:
            self._collective("barrier", lambda: dist.barrier(group=self.group))
