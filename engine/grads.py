"""Gradients: collected per group as autograd produces them, reduced to their owner, accumulated.

Each trainable parameter gets a post-accumulate-grad hook. When it fires the
gradient is copied (as fp32) into its group's flat bucket and ``param.grad``
is dropped; when every parameter of a group has reported, the bucket is
reduced at once (while the rest of backward goes on) and added to the
group's fp32 accumulator, which persists across the micro-steps of a
gradient accumulation window and lives where the optimizer tier runs (host
memory for CPU/NVMe offload).

Reduction by stage: stages 0 and 1 all-reduce the whole bucket (every rank
keeps the full fp32 gradient; stage 1's optimizer reads its slice), stages 2
and 3 reduce-scatter it, so a rank keeps only its shard. Gradients are
averaged over the ranks.

``reduce_bucket_size`` (elements) batches completed groups into one
collective: a group's bucket waits until the waiting buckets hold at least
that many elements (or backward ends), then they are reduced together. For a
reduce-scatter the buckets are laid side by side rank-major
(``[g1 shard 0 | g2 shard 0 | g1 shard 1 | ...]``, one copy) so that each
rank receives its shard of every group in one piece. ``overlap_comm`` runs
the collectives asynchronously, at most two in flight, landing them while
backward goes on; without it each collective finishes before backward
continues. One rank reduces nothing: a bucket lands as soon as it is full.

[Note: a parameter that gets no gradient in some backward (unused, or a
frozen branch) never fires its hook, so a group can stay incomplete. At the
end of every backward a callback queued on the autograd engine reduces all
groups not yet reduced, in group order, treating missing gradients as zero.
Ranks therefore issue the same collectives: groups completed during backward
go in autograd's order (the same on every rank for the same graph), the rest
in index order.]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import nn

from tiermem.engine.comm import Communicator, Pending
from tiermem.engine.grad_accum import GradAccumulators
from tiermem.engine.partition import FlatParamGroup

__all__ = ["BackwardPass", "GradReducer"]


class BackwardPass:
    """Runs registered finishers once at the end of each backward pass.

    Hooks call :meth:`touch` whenever they fire; the first call of a backward
    queues the finisher callback on the autograd engine.
    """

    def __init__(self) -> None:
        self._queued = False
        self._finishers: list[Callable[[], None]] = []

    def add_finisher(self, fn: Callable[[], None]) -> None:
        """Call ``fn()`` at the end of every backward that touched a hook (in order added)."""
        self._finishers.append(fn)

    def touch(self) -> None:
        """Note that a backward pass is running (call from inside autograd hooks)."""
        if self._queued:
            return
        self._queued = True
        torch.autograd.Variable._execution_engine.queue_callback(self._finish)

    def _finish(self) -> None:
        self._queued = False
        for fn in self._finishers:
            fn()


class GradReducer:
    """Collects, reduces and accumulates the gradients of trainable groups.

    ``shard_grads`` (stages 2/3) keeps only this rank's shard of each
    accumulator; otherwise the full padded flat gradient is kept. ``accumulators``
    hold them (:mod:`tiermem.engine.grad_accum`). ``on_reduced(group_index)`` is called
    after a group's gradients were handed off (stage 3 releases the group then).
    """

    def __init__(
        self,
        groups: Sequence[FlatParamGroup],
        *,
        comm: Communicator,
        backward_pass: BackwardPass,
        shard_grads: bool,
        accumulators: GradAccumulators,
        on_reduced: Callable[[int], None] | None = None,
        bucket_numel: int = 1,
        overlap: bool = True,
    ) -> None:
        self.groups = list(groups)
        self.comm = comm
        self.shard_grads = shard_grads
        self.bucket_numel = int(bucket_numel)
        self.overlap = bool(overlap)
        #: collectives issued (one per batch of buckets), for tests and telemetry
        self.collectives = 0
        #: most collectives in flight at once (0 without overlap_comm)
        self.peak_in_flight = 0
        #: called with (group, reduced owner gradient) as each reduction lands, before the
        #: accumulator; True when it consumed the gradient (the engine's update in backward)
        self.on_landed: Callable[[int, torch.Tensor], bool] | None = None
        self.accumulators = accumulators
        self.on_reduced = on_reduced
        self.backward_pass = backward_pass
        self.trainable = [g.index for g in self.groups if g.trainable]
        for gi in self.trainable:
            lay = self.groups[gi].layout
            accumulators.add_group(gi, lay.shard_numel if shard_grads else lay.padded_numel)
        self._bucket: dict[int, torch.Tensor] = {}
        self._filled: dict[int, set[int]] = {}  # slots written into each bucket
        self._remaining: dict[int, int] = {}
        self._reduced: set[int] = set()
        self._completed: set[int] = set()  # reduced because every parameter got its gradient
        self._waiting: list[tuple[int, torch.Tensor]] = []  # full buckets not yet reduced
        self._waiting_numel = 0
        self._in_flight: list[tuple[Pending | None, list[tuple[int, torch.Tensor]]]] = []
        self.has_grads = False
        # groups that received at least one real gradient since the last zero()
        self.touched: set[int] = set()
        self._handles = []
        for gi in self.trainable:
            group = self.groups[gi]
            self._remaining[gi] = len(group.params)
            for slot_index, param in enumerate(group.params):
                hook = partial(self._on_grad, gi, slot_index)
                self._handles.append(param.register_post_accumulate_grad_hook(hook))
        backward_pass.add_finisher(self.finish_backward)

    def remove_hooks(self) -> None:
        """Detach from the parameters."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- during backward ------------------------------------------------------------------
    def _bucket_for(self, gi: int) -> torch.Tensor:
        bucket = self._bucket.get(gi)
        if bucket is None:
            lay = self.groups[gi].layout
            bucket = torch.empty(
                lay.padded_numel, dtype=torch.float32, device=self.groups[gi].device
            )
            bucket[lay.numel :].zero_()
            self._bucket[gi] = bucket
            self._filled[gi] = set()
        return bucket

    def _complete_bucket(self, gi: int) -> torch.Tensor:
        """The group's bucket with the slots no gradient reached set to zero."""
        lay = self.groups[gi].layout
        bucket = self._bucket.pop(gi, None)
        filled = self._filled.pop(gi, set())
        if bucket is None:
            return torch.zeros(lay.padded_numel, dtype=torch.float32, device=self.groups[gi].device)
        for index, slot in enumerate(lay.slots):
            if index not in filled:
                bucket[slot.offset : slot.offset + slot.numel].zero_()
        return bucket

    def _on_grad(self, gi: int, slot_index: int, param: nn.Parameter) -> None:
        self.backward_pass.touch()
        grad = param.grad
        param.grad = None
        if grad is None:
            return
        slot = self.groups[gi].layout.slots[slot_index]
        self.touched.add(gi)
        bucket = self._bucket_for(gi)
        bucket[slot.offset : slot.offset + slot.numel].copy_(grad.reshape(-1))
        self._filled[gi].add(slot_index)
        if gi in self._reduced:
            # a second gradient for this group in the same backward (e.g. retain_graph);
            # reduce it as its own contribution
            self._reduced.discard(gi)
            self._remaining[gi] = len(self.groups[gi].params)
        self._remaining[gi] -= 1
        if self._remaining[gi] == 0:
            self._completed.add(gi)
            self._reduce(gi)

    def _reduce(self, gi: int) -> None:
        group = self.groups[gi]
        bucket = self._complete_bucket(gi)
        self._remaining[gi] = len(group.params)
        self._reduced.add(gi)
        self.has_grads = True
        if self.on_reduced is not None:  # the bucket holds the gradients: release the group
            self.on_reduced(gi)
        if self.comm.world_size == 1:
            self._deliver(gi, bucket)  # nothing to reduce
        else:
            self._waiting.append((gi, bucket))
            self._waiting_numel += bucket.numel()
            if self._waiting_numel >= self.bucket_numel:
                self._issue()

    def _issue(self) -> None:
        """One collective over the waiting buckets; lands it now unless ``overlap``."""
        waiting, self._waiting, self._waiting_numel = self._waiting, [], 0
        if not waiting:
            return
        world = self.comm.world_size
        if len(waiting) == 1:
            flat = waiting[0][1]
        elif self.shard_grads:  # rank-major, so that each rank's shards are contiguous
            flat = torch.cat([b.view(world, -1) for _, b in waiting], dim=1).reshape(-1)
        else:
            flat = torch.cat([b for _, b in waiting])
        if self.shard_grads:
            out = torch.empty(flat.numel() // world, dtype=flat.dtype, device=flat.device)
            pending = self.comm.reduce_scatter_flat(out, flat, average=True, async_op=self.overlap)
            sizes = [b.numel() // world for _, b in waiting]
        else:
            out = flat
            pending = self.comm.all_reduce(flat, average=True, async_op=self.overlap)
            sizes = [b.numel() for _, b in waiting]
        parts = list(zip([gi for gi, _ in waiting], out.split(sizes), strict=True))
        self.collectives += 1
        if not self.overlap:
            self._land(pending, parts)
            return
        # [Note: at most two collectives in flight: enough to overlap one with the
        #  backward compute that follows, and it bounds the buckets held at once.]
        while len(self._in_flight) >= 2:
            self._land(*self._in_flight.pop(0))
        self._in_flight.append((pending, parts))
        self.peak_in_flight = max(self.peak_in_flight, len(self._in_flight))

    def _land(self, pending: Pending | None, parts: list[tuple[int, torch.Tensor]]) -> None:
        if pending is not None:
            pending.wait()
        for gi, reduced in parts:
            self._deliver(gi, reduced)

    def _deliver(self, gi: int, reduced: torch.Tensor) -> None:
        # [Note: only groups every parameter of which got a gradient: a group
        #  reduced at the end of backward with missing gradients may have got none
        #  on any rank, and such a group is not stepped at all (stepped_groups).]
        if self.on_landed is not None and gi in self._completed and self.accumulators.fresh(gi):
            lay = self.groups[gi].layout
            owned = reduced if self.shard_grads else reduced[lay.shard_start : lay.shard_end]
            if self.on_landed(gi, owned):
                return
        self.accumulators.land(gi, reduced)

    def finish_backward(self) -> None:
        """Reduce what is still pending; called once at the end of each backward."""
        pending_groups = [gi for gi in self.trainable if gi not in self._reduced]
        for gi in pending_groups:
            if gi in self._bucket or self.comm.world_size > 1:
                self._reduce(gi)
        self.wait_all()  # issues the last bucket first
        self._reduced.clear()
        self._completed.clear()

    def wait_all(self) -> None:
        """Land every reduction in flight into the accumulators."""
        self._issue()
        while self._in_flight:
            self._land(*self._in_flight.pop(0))

    # -- between steps --------------------------------------------------------------------
    def open_owner_grad(self, gi: int) -> torch.Tensor:
        """The fp32 gradient of the shard this rank updates for group ``gi``, until
        :meth:`close_owner_grad`."""
        acc = self.accumulators.open(gi)
        if self.shard_grads:
            return acc
        lay = self.groups[gi].layout
        return acc[lay.shard_start : lay.shard_end]

    def close_owner_grad(self, gi: int) -> None:
        """Done with :meth:`open_owner_grad`'s tensor."""
        self.accumulators.close(gi)

    def stepped_groups(self) -> list[int]:
        """Trainable groups that got a gradient on some rank since the last :meth:`zero`.

        Like torch's optimizers skipping parameters whose ``grad`` is None, the
        engine leaves a group that no backward reached untouched (no weight
        decay, no momentum step). A collective when there are several ranks.
        """
        if self.comm.world_size == 1:
            return [gi for gi in self.trainable if gi in self.touched]
        flags = torch.zeros(len(self.groups), dtype=torch.float32, device=self.groups[0].device)
        for gi in self.touched:
            flags[gi] = 1.0
        self.comm.all_reduce(flags)
        return [gi for gi in self.trainable if flags[gi] > 0]

    def zero(self) -> None:
        """Clear the accumulators (after a step, or on the user's ``zero_grad``)."""
        self.accumulators.zero()
        self.has_grads = False
        self.touched.clear()
