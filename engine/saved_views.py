"""Stage 3: what autograd saves of a gathered parameter is saved as a reference,
not as a view that keeps the forward's gathered buffer alive until backward.

[Note: ``F.linear`` saves ``weight.t()`` for its backward: a view of the
group's gathered flat buffer. Releasing the group after forward then freed
nothing (the view kept the buffer, on the GPU too) and the buffer could not
be reused (tiermem.engine.flat_buffers). With these saved-tensor hooks,
active while the root module's forward runs, a saved tensor that is a
parameter of a partitioned group, or a view of one, is replaced by the
parameter and the view's geometry; backward rebuilds the view from the
parameter, which the stage 3 hooks have gathered again by then (DeepSpeed
gets the same effect by replacing ``F.linear`` with its own autograd
function). Tensors saved inside an activation-checkpointed region go through
the checkpoint's own hooks (the innermost apply) and are recomputed.]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from tiermem.engine.partition import FlatParamGroup, GroupState

__all__ = ["SavedParamViews"]


@dataclass(frozen=True)
class _SavedView:
    """A saved tensor: ``group``'s parameter ``param`` seen through a strided view."""

    group: int
    param: nn.Parameter
    size: torch.Size
    stride: tuple[int, ...]
    offset: int  # storage offset relative to the parameter's


@dataclass(frozen=True)
class _Outer:
    """A saved tensor packed by the caller's own hooks (unpacked by them too)."""

    packed: object
    unpack: Callable


# the innermost saved-tensor hooks in force (None where this torch cannot say)
_top_hooks = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)


class SavedParamViews:
    """Pack/unpack hooks for the parameters of partitioned, non-persistent groups.

    ``regather(gi)`` is called at unpack time when group ``gi`` is not gathered
    (it must gather it and keep it until its backward users are done).
    """

    def __init__(
        self, groups: Sequence[FlatParamGroup], *, regather: Callable[[int], None]
    ) -> None:
        self.groups = groups
        self.regather = regather
        self._group_of = {
            id(p): gi
            for gi, g in enumerate(groups)
            if g.partitioned and not g.persistent
            for p in g.params
        }
        self._active: torch.autograd.graph.saved_tensors_hooks | None = None
        self._outer: tuple[Callable, Callable] | None = None  # the caller's hooks, if any
        self.packed = 0  # saved tensors replaced by references (for tests)

    def enter(self) -> None:
        """Start replacing saved views (the root module's forward begins).

        [Note: saved-tensor hooks do not nest: the innermost pair sees every
        tensor. When the caller has hooks of its own around the forward (e.g.
        ``torch.autograd.graph.save_on_cpu``), the tensors that are not
        parameter views go to them. Where torch cannot tell whether there are
        any, nothing is installed (saved views then keep their buffers until
        backward, safely).]
        """
        if self._active is not None or _top_hooks is None:
            return
        self._outer = _top_hooks(False)
        self._active = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._active.__enter__()

    def exit(self) -> None:
        """Stop (the root module's forward ended, also by an exception)."""
        if self._active is not None:
            active, self._active = self._active, None
            active.__exit__(None, None, None)

    def _pack(self, t: torch.Tensor):
        base = t._base if t._base is not None else t
        gi = self._group_of.get(id(base))
        if gi is None or self.groups[gi].state is not GroupState.GATHERED:
            if self._outer is None:
                return t
            outer_pack, outer_unpack = self._outer
            return _Outer(outer_pack(t), outer_unpack)
        self.packed += 1
        return _SavedView(
            gi, base, t.size(), t.stride(), t.storage_offset() - base.storage_offset()
        )

    def _unpack(self, saved):
        if isinstance(saved, _Outer):
            return saved.unpack(saved.packed)
        if not isinstance(saved, _SavedView):
            return saved
        if self.groups[saved.group].state is not GroupState.GATHERED:
            self.regather(saved.group)
        p = saved.param.detach()
        return p.as_strided(saved.size, saved.stride, p.storage_offset() + saved.offset)
