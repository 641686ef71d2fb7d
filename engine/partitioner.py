"""Turn modules' parameters into flat parameter groups sharded into their placements.

Used by the engine for a whole model at once, and by
:func:`tiermem.init_context` one module at a time while the model is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tiermem.engine.comm import Communicator
from tiermem.engine.flat_buffers import FlatBufferPool
from tiermem.engine.partition import FlatParamGroup, GroupLayout, make_layout
from tiermem.engine.placement import Placements, build_placements
from tiermem.engine.rank_agreement import agree
from tiermem.engine.settings import EngineSettings

__all__ = ["Partitioner"]


class Partitioner:
    """Makes :class:`FlatParamGroup` objects for one engine: layouts, placements, initial shards."""

    def __init__(
        self,
        settings: EngineSettings,
        *,
        comm: Communicator,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.settings = settings
        self.comm = comm
        self.device = device
        self.dtype = dtype
        self.stage = settings.zero.stage
        self.num_shards = 1 if self.stage == 0 else comm.world_size
        self.shard_rank = 0 if self.stage == 0 else comm.rank
        self.placements: Placements | None = None
        self.flat_buffers: FlatBufferPool | None = None
        self.largest_shard = 0
        self._next_key = 0

    def layout(
        self, index: int, module_name: str, members: Sequence[tuple[str, nn.Parameter]]
    ) -> GroupLayout:
        """The layout of a new group (with a fresh storage key)."""
        lay = make_layout(
            index,
            module_name,
            members,
            num_shards=self.num_shards,
            shard_rank=self.shard_rank,
            key=self._next_key,
        )
        self._next_key += 1
        return lay

    def open(self, *, largest_shard: int) -> Placements:
        """Create the placements, for shards of at most ``largest_shard`` elements."""
        if self.placements is not None:
            raise RuntimeError("placements already open")
        self.largest_shard = int(largest_shard)
        # [Note: the flat buffers of stage 3 gathers that copy are reused (see
        #  tiermem.engine.flat_buffers); at most the prefetch window and the two
        #  largest groups around it are kept.]
        window = self.settings.zero.prefetch_bucket_size + 2 * self.largest_shard * self.num_shards
        self.flat_buffers = FlatBufferPool(cap_bytes=window * self.dtype.itemsize)
        # [Note: opening the placements checks nvme_path and creates this
        #  rank's swap directory, which can fail on one node only; agree()
        #  raises on every rank then, naming the one that failed, instead of
        #  leaving the others in the first broadcast until the timeout.]
        self.placements = agree(
            self.comm,
            "opening the offload placements",
            lambda: build_placements(
                self.settings,
                device=self.device,
                rank=self.comm.rank,
                dtype=self.dtype,
                largest_shard=largest_shard,
                num_shards=self.num_shards,
            ),
            undo=lambda placements: placements.close(),
        )
        return self.placements

    def partition(self, layout: GroupLayout, params: Sequence[nn.Parameter]) -> FlatParamGroup:
        """Build the group: rank 0's values on every rank, fp32 master shard to the optimizer
        tier, compute-dtype shard to the param home (stage 3) or the flat buffer."""
        if self.placements is None:
            raise RuntimeError("open() the placements first")
        if layout.shard_numel > self.largest_shard:
            raise ValueError(
                f"module {layout.module_name!r}: its parameters need {layout.shard_numel} "
                f"elements per rank, more than the {self.largest_shard} the offload buffers "
                "were sized for (zero_optimization.offload_param.buffer_size)"
            )
        zero = self.settings.zero
        group = FlatParamGroup(
            layout,
            params,
            dtype=self.dtype,
            device=self.device,
            comm=self.comm,
            home=self.placements.home,
            persistent=self.stage == 3 and layout.numel < zero.param_persistence_threshold,
            buffers=self.flat_buffers if self.stage == 3 else None,
        )
        full = group.flatten_fp32()
        self.comm.broadcast(full, src=0)
        if group.trainable:
            self.placements.shard_optimizer.add(
                layout.key, full[layout.shard_start : layout.shard_end], _param_starts(layout)
            )
        group.install(full)
        return group

    def reinstall(self, group: FlatParamGroup, full_fp32: torch.Tensor) -> None:
        """New values for an existing group (init code changed its gathered parameters)."""
        self.comm.broadcast(full_fp32, src=0)
        lay = group.layout
        if group.trainable:
            self.placements.shard_optimizer.drop(lay.key)
            self.placements.shard_optimizer.add(
                lay.key, full_fp32[lay.shard_start : lay.shard_end], _param_starts(lay)
            )
        group.set_values(full_fp32)

    def drop(self, group: FlatParamGroup) -> None:
        """Forget a group whose parameters the model no longer has."""
        if group.trainable:
            self.placements.shard_optimizer.drop(group.key)
        if group.partitioned:
            group.refs, group.persistent = 0, False
            group.free()
            self.placements.home.drop(group.key)


def _param_starts(layout: GroupLayout) -> list[int]:
    """Shard offsets where the layout's parameters begin (inside this rank's shard)."""
    lo, hi = layout.shard_start, layout.shard_end
    return [s.offset - lo for s in layout.slots if lo < s.offset < hi]
