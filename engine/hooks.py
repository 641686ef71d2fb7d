"""Stage 3 module hooks: gather a module's groups just before it runs, release them after.

Forward: a pre-hook on every module that needs groups acquires them (waiting
for a prefetch in flight, or gathering now); a post-hook releases them and,
when grad is enabled, registers a hook on the module's outputs that fires
when backward reaches the module (before any of its backward nodes run),
which acquires the groups again. A group acquired for backward is released
as soon as its gradients have been reduced (every node that used its
parameters has then run) or at the end of the backward pass at the latest.

Prefetch: the first forward and the first backward record the order in
which groups are first needed; later passes start gathering the next groups
in that order (up to ``prefetch_numel`` elements ahead) whenever one is
acquired.

[Note: with activation checkpointing a module's forward runs again inside
backward (the recompute), so its pre-forward hook fires during backward.
There it notes and prefetches along the *backward* trace: the forward
trace's next groups belong to blocks backward has already finished, which
would stay gathered, fetched from their tier, until the end of backward
(memory growing with the number of layers).

[Note: torch's non-reentrant checkpoint stops the recompute as soon as the
last saved tensor it needs exists ("early stop"), inside the last module's
forward, whose post-forward hook then never runs. Acquisitions made by
pre-forward hooks during backward are therefore counted, and those a
post-forward did not release are released once the group's gradients are
reduced (its backward users are done), or at the end of backward; else one
group per checkpointed block would stay gathered for good.]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from tiermem.engine.grads import BackwardPass
from tiermem.engine.partition import FlatParamGroup, GroupState
from tiermem.engine.saved_views import SavedParamViews

__all__ = ["ParamScheduler"]


class _Trace:
    """The order in which groups were first needed in one kind of pass, and how far the
    current pass has got in it.

    [Note: prefetch looks ahead from the furthest position the pass has reached,
    not from the group being acquired: a group used a second time (a tied
    embedding, a layer used in the recompute and again in its own backward)
    would otherwise gather again groups the pass has already finished with,
    which then stay gathered until the pass ends.]
    """

    def __init__(self) -> None:
        self.order: list[int] = []
        self.position: dict[int, int] = {}
        self.recorded = False
        self.reached = -1  # furthest position acquired in the current pass

    def restart(self) -> None:
        """A new pass begins at the start of the order."""
        self.reached = -1

    def note(self, gi: int) -> None:
        if not self.recorded and gi not in self.position:
            self.position[gi] = len(self.order)
            self.order.append(gi)

    def after(self, gi: int) -> list[int]:
        """The groups still to come once ``gi`` is acquired (empty while recording)."""
        if not self.recorded or gi not in self.position:
            return []
        self.reached = max(self.reached, self.position[gi])
        return self.order[self.reached + 1 :]


class ParamScheduler:
    """Installs the stage 3 gather/release/prefetch hooks on a module tree."""

    def __init__(
        self,
        root: nn.Module,
        groups: Sequence[FlatParamGroup],
        module_uses: dict[nn.Module, tuple[int, ...]],
        *,
        backward_pass: BackwardPass,
        prefetch_numel: int,
        max_live_numel: int = 1_000_000_000,
    ) -> None:
        self.root = root
        self.groups = list(groups)
        self.module_uses = dict(module_uses)
        self.prefetch_numel = int(prefetch_numel)
        # [Note: stage3_max_live_parameters bounds what prefetch may gather: a group
        #  is prefetched only while the gathered (non-persistent) groups, it
        #  included, stay within the bound. Groups a module needs now are gathered
        #  regardless, so the elements gathered at once never exceed
        #  max(max_live_numel, what the running modules need together).]
        self.max_live_numel = int(max_live_numel)
        self._live: set[int] = set()  # groups gathered through this scheduler, maybe freed since
        #: most non-persistent group elements gathered (or gathering) at once, for tests
        self.peak_live_numel = 0
        self.forward_trace = _Trace()
        self.backward_trace = _Trace()
        self._backward_refs: Counter[int] = Counter()
        self._in_backward = False  # from the first backward hook to finish_backward
        self._recompute_refs: Counter[int] = Counter()  # pre-forward acquires in backward
        self._handles = []
        self.backward_pass = backward_pass
        backward_pass.add_finisher(self.finish_backward)
        self.saved_views = SavedParamViews(self.groups, regather=self._regather)
        self._install()

    def _install(self) -> None:
        for module in self.module_uses:
            self._handles.append(module.register_forward_pre_hook(self._pre_forward))
            self._handles.append(module.register_forward_hook(self._post_forward))
        self._handles.append(self.root.register_forward_hook(self._post_root_forward))
        self._handles.append(
            self.root.register_forward_pre_hook(lambda _m, _a: self.saved_views.enter())
        )
        self._handles.append(
            self.root.register_forward_hook(
                lambda _m, _a, _o: self.saved_views.exit(), always_call=True
            )
        )

    def remove_hooks(self) -> None:
        """Detach from the modules."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # -- prefetch -------------------------------------------------------------------------
    def _live_numel(self) -> int:
        """Elements of the non-persistent groups gathered or gathering now."""
        self._live = {
            gi
            for gi in self._live
            if self.groups[gi].state is not GroupState.SHARDED and not self.groups[gi].persistent
        }
        return sum(self.groups[gi].layout.numel for gi in self._live)

    def _prefetch_after(self, gi: int, trace: _Trace) -> None:
        self._live.add(gi)
        live = self._live_numel()
        budget = self.prefetch_numel
        if budget > 0:
            for nxt in trace.after(gi):
                group = self.groups[nxt]
                if group.state is GroupState.SHARDED:
                    size = group.layout.numel
                    if size > budget or live + size > self.max_live_numel:
                        break
                    group.prefetch()
                    self._live.add(nxt)
                    live += size  # as the bound above counts it
                budget -= group.layout.numel
                if budget <= 0:
                    break
        self.peak_live_numel = max(self.peak_live_numel, live)

    # -- forward --------------------------------------------------------------------------
    def _pre_forward(self, module: nn.Module, _args) -> None:
        trace = self.backward_trace if self._in_backward else self.forward_trace
        for gi in self.module_uses[module]:
            trace.note(gi)
            self.groups[gi].acquire()
            if self._in_backward:
                self._recompute_refs[gi] += 1
            self._prefetch_after(gi, trace)

    def _post_forward(self, module: nn.Module, _args, output) -> None:
        uses = self.module_uses[module]
        for gi in uses:
            if self._recompute_refs[gi] > 0:
                self._recompute_refs[gi] -= 1
            self.groups[gi].release()
        if torch.is_grad_enabled():
            outputs = [
                t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t.requires_grad
            ]
            if outputs:
                torch.autograd.graph.register_multi_grad_hook(
                    outputs, lambda _grad, m=module: self._pre_backward(m), mode="any"
                )

    def _post_root_forward(self, _module: nn.Module, _args, _output) -> None:
        self.forward_trace.recorded = True
        self.forward_trace.restart()
        self.free_unused()

    # -- backward -------------------------------------------------------------------------
    def _pre_backward(self, module: nn.Module) -> None:
        self.backward_pass.touch()
        self._in_backward = True
        for gi in self.module_uses[module]:
            self.backward_trace.note(gi)
            self.groups[gi].acquire()
            self._backward_refs[gi] += 1
            self._prefetch_after(gi, self.backward_trace)

    def _regather(self, gi: int) -> None:
        """Backward needs group ``gi``'s parameters outside its modules' hooks (a saved
        view of them): gather it until its gradients are handed off."""
        self._in_backward = True
        self.groups[gi].acquire()
        self._backward_refs[gi] += 1

    def on_reduced(self, gi: int) -> None:
        """Group ``gi``'s gradients are handed off: its backward users are done."""
        for _ in range(self._backward_refs.pop(gi, 0) + self._recompute_refs.pop(gi, 0)):
            self.groups[gi].release()

    def finish_backward(self) -> None:
        """End of a backward pass: release what backward still holds, drop stray prefetches."""
        for gi in list(self._backward_refs) + list(self._recompute_refs):
            self.on_reduced(gi)
        self._in_backward = False
        self.backward_trace.recorded = True
        self.backward_trace.restart()
        self.free_unused()

    def free_unused(self) -> None:
        """Free gathered groups that nobody holds (prefetched but not used)."""
        for group in self.groups:
            if group.refs == 0 and not group.persistent:
                group.free()
