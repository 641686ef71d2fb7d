"""Chunked access to where the engine keeps a rank's shards: parameter values and Adam states.

A checkpoint streams each shard through these accessors one chunk at a time
(the optimizer's sub-groups on NVMe, at most :data:`CHUNK_ELEMENTS` elsewhere),
so a save or load never holds more than a chunk of any state in host memory
beyond where the engine already keeps it.

* :func:`optimizer_access` wraps the engine's
  :class:`~tiermem.engine.optimizer_step.ShardOptimizer`: fp32 ``master``,
  ``exp_avg`` and ``exp_avg_sq`` of a shard range, to read (save) or to fill
  (load).
* :func:`read_param_shard` / :func:`param_shard_target` give a group's
  compute-dtype parameter shard, wherever its home is.

[Note: the shard optimizers expose whole-shard copies only
(``ShardOptimizer.state``), so these accessors read the placements'
storage directly (by ``placement``: ``none`` device tensors, ``cpu`` host
tensors, ``nvme`` store sub-groups
``[master | m | v]``). A chunked read/write API on ``ShardOptimizer`` would
let this module drop that knowledge.]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from tiermem.engine.optimizer_step import STATE_KINDS

__all__ = [
    "CHUNK_ELEMENTS",
    "KINDS",
    "OptimizerStateAccess",
    "optimizer_access",
    "param_shard_target",
    "read_param_shard",
]

#: the fp32 optimizer states of a shard, in checkpoint order
KINDS = STATE_KINDS
#: largest chunk (elements) streamed at once where the placement has no sub-groups of its own
CHUNK_ELEMENTS = 1 << 22


def _even_chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)] or [(0, 0)]


class OptimizerStateAccess(ABC):
    """Chunks of a rank's Adam states (fp32), keyed like the shard optimizer: by the
    group's storage key (``group.key``)."""

    @abstractmethod
    def numel(self, key: int) -> int:
        """Elements of shard ``key``."""

    def chunks(self, key: int) -> list[tuple[int, int]]:
        """``[lo, hi)`` ranges of shard ``key`` to stream one at a time."""
        return _even_chunks(self.numel(key), CHUNK_ELEMENTS)

    @abstractmethod
    @contextmanager
    def read(self, key: int, lo: int, hi: int) -> Iterator[dict[str, torch.Tensor]]:
        """Host fp32 tensors of ``KINDS`` for elements ``[lo, hi)``, valid inside the block."""

    @abstractmethod
    @contextmanager
    def write(self, key: int, lo: int, hi: int, *, step: int) -> Iterator[dict[str, torch.Tensor]]:
        """Host fp32 tensors to fill with ``KINDS`` of ``[lo, hi)``; stored when the block ends.

        ``step`` is the group's Adam step count (the engine keeps it; no placement
        stores it).
        """


class _HostAccess(OptimizerStateAccess):
    def __init__(self, opt: Any) -> None:
        self.states: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = opt._states

    def numel(self, key: int) -> int:
        return self.states[key][0].numel()

    @contextmanager
    def read(self, key: int, lo: int, hi: int) -> Iterator[dict[str, torch.Tensor]]:
        yield {k: t[lo:hi] for k, t in zip(KINDS, self.states[key], strict=True)}

    @contextmanager
    def write(self, key: int, lo: int, hi: int, *, step: int) -> Iterator[dict[str, torch.Tensor]]:
        yield {k: t[lo:hi] for k, t in zip(KINDS, self.states[key], strict=True)}


class _DeviceAccess(OptimizerStateAccess):
    """States on the compute device: one ``(master, exp_avg, exp_avg_sq)`` per shard."""

    def __init__(self, opt: Any) -> None:
        self.states: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = opt._states

    def numel(self, key: int) -> int:
        return self.states[key][0].numel()

    @contextmanager
    def read(self, key: int, lo: int, hi: int) -> Iterator[dict[str, torch.Tensor]]:
        yield {k: t[lo:hi].detach().cpu() for k, t in zip(KINDS, self.states[key], strict=True)}

    @contextmanager
    def write(self, key: int, lo: int, hi: int, *, step: int) -> Iterator[dict[str, torch.Tensor]]:
        host = {k: torch.empty(hi - lo, dtype=torch.float32) for k in KINDS}
        yield host
        with torch.no_grad():
            for kind, t in zip(KINDS, self.states[key], strict=True):
                t[lo:hi].copy_(host[kind])


class _StoreAccess(OptimizerStateAccess):
    """States on NVMe: one store tensor ``[master | m | v]`` per sub-group."""

    def __init__(self, opt: Any) -> None:
        self.opt = opt
        self.store = opt.store

    def numel(self, key: int) -> int:
        chunks = self.opt._chunks[key]
        return chunks[-1][1] if chunks else 0

    def chunks(self, key: int) -> list[tuple[int, int]]:
        return list(self.opt._chunks[key]) or [(0, 0)]

    def _index(self, key: int, lo: int, hi: int) -> int:
        index = self.opt.chunk_index(key, lo, hi)
        if index is None:
            raise ValueError(f"[{lo}, {hi}) is not a sub-group of shard {key}")
        return index

    @contextmanager
    def _packed(self, key: int, lo: int, hi: int, *, dirty: bool):
        from tiermem.store import TierKind

        name = self.opt._name(key, self._index(key, lo, hi))
        packed = self.store.fetch(name, TierKind.HOST).wait()
        n = hi - lo
        ok = False
        try:
            yield dict(zip(KINDS, (packed[:n], packed[n : 2 * n], packed[2 * n :]), strict=True))
            ok = True
        finally:
            self.store.release(name, dirty=dirty and ok)

    @contextmanager
    def read(self, key: int, lo: int, hi: int) -> Iterator[dict[str, torch.Tensor]]:
        with self._packed(key, lo, hi, dirty=False) as views:
            yield views

    @contextmanager
    def write(self, key: int, lo: int, hi: int, *, step: int) -> Iterator[dict[str, torch.Tensor]]:
        with self._packed(key, lo, hi, dirty=True) as views:
            yield views


def optimizer_access(shard_optimizer: Any) -> OptimizerStateAccess:
    """The accessor for ``shard_optimizer`` (by its ``placement``)."""
    if hasattr(shard_optimizer, "state_access"):  # placements that give their own (compact states)
        return shard_optimizer.state_access()
    placement = getattr(shard_optimizer, "placement", None)
    if placement == "cpu":
        return _HostAccess(shard_optimizer)
    if placement == "none":
        return _DeviceAccess(shard_optimizer)
    if placement == "nvme":
        return _StoreAccess(shard_optimizer)
    raise TypeError(
        f"checkpoints do not know the optimizer placement {placement!r} "
        f"({type(shard_optimizer).__name__})"
    )


@contextmanager
def read_param_shard(group: Any) -> Iterator[torch.Tensor]:
    """This rank's compute-dtype parameter shard of ``group`` (any device), inside the block."""
    lay = group.layout
    if not group.partitioned:
        yield group.flat[lay.shard_start : lay.shard_end]
        return
    shard = group.home.load(group.key)
    try:
        yield shard
    finally:
        group.home.unload(group.key)


@contextmanager
def param_shard_target(group: Any) -> Iterator[torch.Tensor]:
    """A tensor to write this rank's new parameter shard into; published (and regathered
    where the group is gathered) when the block ends. A collective with several ranks."""
    target = group.update_target()
    yield target
    group.after_update()
