"""Flat parameter groups: each module's own parameters in one flat buffer, sharded over the ranks.

One module : one group (as FSDP2 wraps a module): the parameters a module
registers itself (``recurse=False``) are laid out back to back in one flat
buffer, padded so that it divides by the number of shards, and rank ``r``
owns the contiguous shard ``[r * S, (r + 1) * S)``. A parameter belongs to
exactly one group, the first module that registers it (a module whose own
parameters are partly frozen gets two groups, one trainable and one frozen);
a module that also uses another module's parameter (a tied ``lm_head.weight``
is ``embedding.weight``) lists that group among the groups it needs, so the
stage 3 hooks gather it too.

Per-parameter state lives here (:class:`ParamSlot`, keyed by the parameter's
``id``); nothing is set on the ``nn.Parameter`` objects except their
``.data``.

[Note: parameters are switched between "gathered" and "released" by
assigning ``param.data`` (a view of the gathered flat buffer, or an empty
tensor), not with ``torch.nn.utils.swap_tensors``. ``.data`` assignment
replaces the storage of the same TensorImpl and keeps its version counter,
and autograd saves a leaf parameter by reference to that TensorImpl, so a
saved weight follows the parameter: the backward hooks gather the group
again before the module's backward runs and the saved tensor then reads the
regathered (identical) values. ``swap_tensors`` would exchange the whole
object, and it refuses tensors that autograd has saved. The gradient
accumulator of a parameter is created during forward while the parameter
has its full shape, so AccumulateGrad accepts full-shape gradients. Ops
that save a *view* of a weight instead (``F.linear`` saves ``weight.t()``)
keep reading the forward's buffer until backward; so a freed buffer is not
reused while anything else refers to it (tiermem.engine.flat_buffers).]
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from tiermem.engine.comm import Communicator, Pending
from tiermem.engine.flat_buffers import FlatBufferPool, storage_users
from tiermem.engine.param_home import ParamHome

__all__ = [
    "FlatParamGroup",
    "GroupLayout",
    "GroupPlan",
    "GroupState",
    "ParamSlot",
    "TRANSITIONS",
    "plan_groups",
]


class GroupState(enum.Enum):
    """Where a group's parameters are."""

    SHARDED = "sharded"  # only the shard exists (in its home); params are empty
    GATHERING = "gathering"  # an all-gather into the flat buffer is in flight
    GATHERED = "gathered"  # the flat buffer is complete; params are views of it


TRANSITIONS: dict[GroupState, frozenset[GroupState]] = {
    GroupState.SHARDED: frozenset({GroupState.GATHERING}),
    GroupState.GATHERING: frozenset({GroupState.GATHERED}),
    GroupState.GATHERED: frozenset({GroupState.SHARDED}),
}


@dataclass(frozen=True)
class ParamSlot:
    """One parameter's place in its group's flat buffer."""

    name: str
    shape: torch.Size
    numel: int
    offset: int


@dataclass(frozen=True, kw_only=True)
class GroupLayout:
    """The flat layout of one group and the shard this rank owns."""

    index: int
    module_name: str
    slots: tuple[ParamSlot, ...]
    numel: int
    num_shards: int
    shard_rank: int
    key: int = -1  # the group's key in its param home and optimizer tier (-1: index)

    def __post_init__(self) -> None:
        if self.key < 0:
            object.__setattr__(self, "key", self.index)

    @property
    def padded_numel(self) -> int:
        """``numel`` rounded up to a multiple of ``num_shards``."""
        return -(-self.numel // self.num_shards) * self.num_shards

    @property
    def shard_numel(self) -> int:
        """Elements per shard."""
        return self.padded_numel // self.num_shards

    @property
    def shard_start(self) -> int:
        """Offset of this rank's shard in the flat buffer."""
        return self.shard_rank * self.shard_numel

    @property
    def shard_end(self) -> int:
        """End (exclusive) of this rank's shard in the flat buffer."""
        return self.shard_start + self.shard_numel


@dataclass
class GroupPlan:
    """Which parameters form which group, and which groups each module needs."""

    members: list[tuple[str, list[tuple[str, nn.Parameter]]]] = field(default_factory=list)
    module_uses: dict[nn.Module, tuple[int, ...]] = field(default_factory=dict)
    module_names: dict[nn.Module, str] = field(default_factory=dict)


def plan_groups(
    module: nn.Module, *, owner: dict[int, int] | None = None, first_index: int = 0
) -> GroupPlan:
    """Group ``module``'s parameters: one group per submodule that registers new parameters
    (two when some of them are frozen and some not).

    ``owner`` maps ``id(param)`` to the index of a group that already exists
    (built by :func:`tiermem.init_context`); such parameters get no new group,
    and new groups are numbered from ``first_index``.
    """
    plan = GroupPlan()
    owner = dict(owner or {})
    for mod_name, mod in module.named_modules():
        own: list[tuple[str, nn.Parameter]] = []
        uses: list[int] = []
        for p_name, param in mod._parameters.items():
            if param is None:
                continue
            qualified = f"{mod_name}.{p_name}" if mod_name else p_name
            if id(param) in owner:
                if owner[id(param)] not in uses:
                    uses.append(owner[id(param)])
                continue
            own.append((qualified, param))
        # [Note: a module whose own parameters are partly frozen (a frozen bias, say)
        #  gets two groups, trainable first: a group is stepped by the optimizer as
        #  a whole, so it must be all trainable or all frozen.]
        trainable = [(n, p) for n, p in own if p.requires_grad]
        frozen = [(n, p) for n, p in own if not p.requires_grad]
        split = [trainable, frozen] if trainable and frozen else [own] if own else []
        for position, members in enumerate(split):
            index = first_index + len(plan.members)
            plan.members.append((mod_name, members))
            for _, param in members:
                owner[id(param)] = index
            uses.insert(position, index)  # its own groups first, then the ones it borrows
        if uses:
            plan.module_uses[mod] = tuple(uses)
            plan.module_names[mod] = mod_name
    return plan


def make_layout(
    index: int,
    module_name: str,
    params: Sequence[tuple[str, nn.Parameter]],
    *,
    num_shards: int,
    shard_rank: int,
    key: int = -1,
) -> GroupLayout:
    """Lay ``params`` out back to back."""
    slots, offset = [], 0
    for name, param in params:
        slots.append(ParamSlot(name, param.shape, param.numel(), offset))
        offset += param.numel()
    return GroupLayout(
        index=index,
        module_name=module_name,
        slots=tuple(slots),
        numel=offset,
        num_shards=num_shards,
        shard_rank=shard_rank,
        key=key,
    )


class FlatParamGroup:
    """One group's parameters: the flat buffer (when gathered), its shard, and its state.

    With ``partitioned=False`` (stages 0-2) the flat buffer is allocated once
    and the parameters are permanent views of it. With ``partitioned=True``
    (stage 3) only the shard persists, in ``home``; :meth:`acquire` gathers
    the flat buffer and :meth:`release` frees it when its last user is done,
    unless the group is ``persistent`` (small groups under the persistence
    threshold stay gathered; they are still sharded for the optimizer).
    """

    def __init__(
        self,
        layout: GroupLayout,
        params: Sequence[nn.Parameter],
        *,
        dtype: torch.dtype,
        device: torch.device,
        comm: Communicator,
        home: ParamHome | None = None,
        persistent: bool = False,
        buffers: FlatBufferPool | None = None,
    ) -> None:
        if len(params) != len(layout.slots):
            raise ValueError("one parameter per slot expected")
        self.layout = layout
        self.params = list(params)
        self.dtype = dtype
        self.device = device
        self.comm = comm
        self.home = home
        self.partitioned = home is not None
        self.persistent = persistent or not self.partitioned
        self.trainable = all(p.requires_grad for p in self.params)
        if not self.trainable and any(p.requires_grad for p in self.params):
            names = [s.name for s in layout.slots]
            raise ValueError(
                f"module {layout.module_name!r} mixes trainable and frozen parameters {names}; "
                "a group's parameters must all require grad or none"
            )
        self.state = GroupState.GATHERED if not self.partitioned else GroupState.SHARDED
        self.refs = 0
        self.flat: torch.Tensor | None = None
        self._pending: Pending | None = None
        self._loaded: bool = False  # the shard is loaded from the home for a gather
        self._lent: bool = False  # the flat buffer is the home's shard, lent until free()
        self._pooled: bool = False  # the flat buffer came from ``buffers``
        self._flat_users: int | None = None  # storage_users of a pooled buffer when taken
        self.buffers = buffers
        self._empty = torch.empty(0, dtype=dtype, device=device)

    @property
    def index(self) -> int:
        """The group's index (its position in the engine's group list)."""
        return self.layout.index

    @property
    def key(self) -> int:
        """The group's key in its param home and optimizer tier (fixed for its lifetime)."""
        return self.layout.key

    def reindex(self, index: int) -> None:
        """Give the group a new position in the engine's list (its key stays)."""
        self.layout = dataclasses.replace(self.layout, index=index)

    def __repr__(self) -> str:
        return (
            f"FlatParamGroup({self.index}, {self.layout.module_name!r}, "
            f"numel={self.layout.numel}, state={self.state.name}, refs={self.refs})"
        )

    # -- construction ---------------------------------------------------------------------
    def flatten_fp32(self) -> torch.Tensor:
        """The parameters' current values as one padded fp32 flat tensor on ``device``."""
        full = torch.zeros(self.layout.padded_numel, dtype=torch.float32, device=self.device)
        for slot, param in zip(self.layout.slots, self.params, strict=True):
            full[slot.offset : slot.offset + slot.numel].copy_(param.detach().reshape(-1))
        return full

    def install(self, full_fp32: torch.Tensor) -> None:
        """Take the values in ``full_fp32`` (from :meth:`flatten_fp32`) as the parameters'.

        Unpartitioned: the flat buffer gets them and the parameters become views of
        it. Partitioned: this rank's shard goes to ``home`` and the parameters are
        released (a persistent group is gathered again at once).
        """
        lay = self.layout
        if not self.partitioned:
            self.flat = full_fp32.to(self.dtype)
            self._point_params_at_flat()
            return
        self.home.put(self.key, full_fp32[lay.shard_start : lay.shard_end].to(self.dtype))
        for param in self.params:
            param.data = self._empty
        if self.persistent:
            self.acquire()
            self.refs = 0

    def set_values(self, full_fp32: torch.Tensor) -> None:
        """Replace the group's values everywhere (shard in its home, gathered buffer)."""
        lay = self.layout
        if self.state is GroupState.GATHERING:
            self._finish_gather()
        if self.partitioned:
            target = self.home.open_for_update(self.key)
            target.copy_(full_fp32[lay.shard_start : lay.shard_end].to(target.device))
            self.home.close_update(self.key)
        if self.flat is not None:
            self.flat.copy_(full_fp32)

    def repoint(self) -> None:
        """Point the parameters back at the group's own storage: views of the gathered flat
        buffer, or the empty placeholder while only the shard exists (after code, such as
        ``init_context``'s gathers, pointed them elsewhere)."""
        if self.flat is not None and self.state is GroupState.GATHERED:
            self._point_params_at_flat()
        else:
            for param in self.params:
                param.data = self._empty

    def _point_params_at_flat(self) -> None:
        for slot, param in zip(self.layout.slots, self.params, strict=True):
            param.data = self.flat[slot.offset : slot.offset + slot.numel].view(slot.shape)

    # -- state machine ----------------------------------------------------------------------
    def _move(self, new: GroupState) -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(
                f"group {self.index} ({self.layout.module_name!r}): "
                f"illegal transition {self.state.name} -> {new.name}"
            )
        self.state = new

    def prefetch(self) -> None:
        """Start gathering the flat buffer without waiting (a no-op unless SHARDED)."""
        if self.state is not GroupState.SHARDED:
            return
        lay = self.layout
        if lay.num_shards == 1:
            lent = self.home.lend(self.key)  # if this raises, the group stays SHARDED
            if lent is not None:  # one shard is the whole buffer: no copy; given back when freed
                self._move(GroupState.GATHERING)
                self.flat, self._pending, self._lent = lent, None, True
                return
        shard = self.home.load(self.key)  # if this raises, the group stays SHARDED
        self._move(GroupState.GATHERING)
        self._loaded = True
        if self.buffers is not None:
            self.flat = self.buffers.take(lay.padded_numel, self.dtype, self.device)
            self._pooled, self._flat_users = True, storage_users(self.flat)
        else:
            self.flat = torch.empty(lay.padded_numel, dtype=self.dtype, device=self.device)
        self._pending = self.comm.all_gather_flat(self.flat, shard, async_op=True)
        if self._pending.done:
            # [Note: one rank copies at once; the shard goes back to its home now
            #  rather than staying fetched until the group is acquired (with NVMe
            #  params, every prefetched group held a store buffer meanwhile).]
            self._pending = None
            self.home.unload(self.key)
            self._loaded = False

    def _finish_gather(self) -> None:
        if self._pending is not None:
            self._pending.wait()
            self._pending = None
        if self._loaded:
            self.home.unload(self.key)
            self._loaded = False
        self._move(GroupState.GATHERED)
        self._point_params_at_flat()

    def acquire(self) -> None:
        """Count one more user; make sure the parameters are gathered when this returns."""
        self.refs += 1
        if self.state is GroupState.SHARDED:
            self.prefetch()
        if self.state is GroupState.GATHERING:
            self._finish_gather()

    def release(self) -> None:
        """Count one user less; free the flat buffer when none is left (partitioned only)."""
        if self.refs <= 0:
            raise RuntimeError(f"group {self.index} released more often than acquired")
        self.refs -= 1
        if self.refs == 0 and not self.persistent:
            self.free()

    def free(self) -> None:
        """Drop the gathered flat buffer now (partitioned, unreferenced groups only)."""
        if not self.partitioned or self.state is GroupState.SHARDED:
            return
        if self.refs:
            raise RuntimeError(f"group {self.index} freed while {self.refs} users hold it")
        if self.state is GroupState.GATHERING:
            self._finish_gather()
        self._move(GroupState.SHARDED)
        for param in self.params:
            param.data = self._empty
        if self._lent:  # (no reference to the buffer kept here: the home counts them)
            self.flat, self._lent = None, False
            self.home.give_back(self.key)
            return
        flat, self.flat = self.flat, None
        if self._pooled:
            self._pooled = False
            self.buffers.give(flat, users=self._flat_users)

    # -- optimizer updates ----------------------------------------------------------------
    def update_target(self) -> torch.Tensor:
        """The tensor the optimizer writes this rank's updated parameter shard into."""
        lay = self.layout
        if not self.partitioned:
            return self.flat[lay.shard_start : lay.shard_end]
        if self.state is GroupState.GATHERING:
            self._finish_gather()
        return self.home.open_for_update(self.key)

    def after_update(self) -> None:
        """Propagate an update written into :meth:`update_target` to every rank's copy."""
        lay = self.layout
        if not self.partitioned:
            if lay.num_shards > 1:
                self.comm.all_gather_flat(self.flat, self.flat[lay.shard_start : lay.shard_end])
            return
        self.home.close_update(self.key)
        if self.state is GroupState.GATHERED:
            shard = self.home.load(self.key)
            if shard.data_ptr() != self.flat.data_ptr():
                self.comm.all_gather_flat(self.flat, shard)
            self.home.unload(self.key)

    def shard_values(self) -> torch.Tensor:
        """A copy of this rank's current parameter shard (compute dtype), for tests and checks."""
        lay = self.layout
        if not self.partitioned:
            return self.flat[lay.shard_start : lay.shard_end].clone()
        shard = self.home.load(self.key).clone()
        self.home.unload(self.key)
        return shard
