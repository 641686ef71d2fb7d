"""Where the fp32 gradient accumulators live: device/host memory, or NVMe through the store.

The :class:`~tiermem.engine.grads.GradReducer` lands each reduced gradient
here; the optimizer step opens one group's accumulator at a time. With the
optimizer states on NVMe the accumulators go there too (4 bytes per
parameter would otherwise stay in host memory), as store tensors
``grad.<key>`` fetched, added to and released dirty.

A zeroed accumulator is only marked *fresh*: the next landing replaces its
contents instead of adding to them, so zeroing costs no pass over memory
(or disk).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["GradAccumulators", "MemoryGradAccumulators", "StoreGradAccumulators"]


class GradAccumulators(ABC):
    """fp32 accumulators, one per trainable group (keyed by the group's position)."""

    @abstractmethod
    def add_group(self, gi: int, numel: int) -> None:
        """Create a zero accumulator of ``numel`` elements for group ``gi``."""

    @abstractmethod
    def land(self, gi: int, reduced: torch.Tensor) -> None:
        """Add ``reduced`` (fp32, any device) into group ``gi``'s accumulator."""

    @abstractmethod
    def open(self, gi: int) -> torch.Tensor:
        """Group ``gi``'s accumulated gradient, valid until :meth:`close`."""

    def close(self, gi: int) -> None:
        """Done with :meth:`open`'s tensor (unchanged)."""
        return None

    def fresh(self, gi: int) -> bool:
        """Whether nothing has landed in group ``gi`` since the last :meth:`zero` (its
        contents count as zero)."""
        return False

    @abstractmethod
    def zero(self) -> None:
        """Every accumulator back to zero."""

    def close_all(self) -> None:
        """Free everything."""
        return None


class MemoryGradAccumulators(GradAccumulators):
    """Accumulators as tensors on ``device`` (the compute device, or the CPU for host offload)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.tensors: dict[int, torch.Tensor] = {}
        self._fresh: set[int] = set()

    def add_group(self, gi: int, numel: int) -> None:
        self.tensors[gi] = torch.zeros(numel, dtype=torch.float32, device=self.device)
        self._fresh.add(gi)

    def fresh(self, gi: int) -> bool:
        return gi in self._fresh

    def land(self, gi: int, reduced: torch.Tensor) -> None:
        reduced = reduced.to(self.device)
        if gi in self._fresh:  # take the tensor over: no add, no earlier zero_
            self.tensors[gi] = reduced if reduced.is_contiguous() else reduced.contiguous()
            self._fresh.discard(gi)
        else:
            self.tensors[gi].add_(reduced)

    def open(self, gi: int) -> torch.Tensor:
        if gi in self._fresh:  # nothing landed since zero(): clear the stale contents now
            self.tensors[gi].zero_()
            self._fresh.discard(gi)
        return self.tensors[gi]

    def zero(self) -> None:
        self._fresh = set(self.tensors)

    def close_all(self) -> None:
        self.tensors.clear()


class StoreGradAccumulators(GradAccumulators):
    """Accumulators as NVMe-homed store tensors (``offload_optimizer.device: nvme``)."""

    def __init__(self, store) -> None:
        from tiermem.store import TierKind

        self.store = store
        self._host = TierKind.HOST
        self._numel: dict[int, int] = {}
        self._fresh: set[int] = set()

    def _name(self, gi: int) -> str:
        return f"grad.{gi}"

    def add_group(self, gi: int, numel: int) -> None:
        self.store.register(self._name(gi), numel, torch.float32)
        self._numel[gi] = numel
        self._fresh.add(gi)

    def fresh(self, gi: int) -> bool:
        return gi in self._fresh

    def land(self, gi: int, reduced: torch.Tensor) -> None:
        acc = self.store.fetch(self._name(gi), self._host).wait()
        if gi in self._fresh:
            acc.copy_(reduced)
            self._fresh.discard(gi)
        else:
            acc.add_(reduced.to("cpu"))
        self.store.release(self._name(gi), dirty=True)

    def open(self, gi: int) -> torch.Tensor:
        acc = self.store.fetch(self._name(gi), self._host).wait()
        if gi in self._fresh:
            acc.zero_()
            self.store.release(self._name(gi), dirty=True)
            self._fresh.discard(gi)
            acc = self.store.fetch(self._name(gi), self._host).wait()
        return acc

    def close(self, gi: int) -> None:
        self.store.release(self._name(gi))

    def zero(self) -> None:
        self._fresh = set(self._numel)

    def close_all(self) -> None:
        # the store is closed right after (scratch files removed); dropping here could
        # fail for an accumulator still fetched by a step that was interrupted
        self._numel.clear()
