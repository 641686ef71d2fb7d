"""Gathered flat buffers kept for reuse on the CPU, and who else still uses a buffer.

[Note: a stage 3 gather that copies (all-gather over ranks, or one rank past
the store's lent buffers) wrote into a fresh ``torch.empty`` each time. On
the CPU a tensor of tens of MB is freshly mapped memory, and its first touch
page-faults: 3.9 GB/s for a fresh buffer against 21 GB/s into touched memory
here. Freed flat buffers are kept, by size, within a byte cap, and handed to
the next gather of that size. CUDA's caching allocator already reuses device
memory, so only the CPU pools.]

[Note: a freed buffer may still be read. Autograd saves some weights as views
of the gathered buffer rather than as the parameter (``F.linear`` saves
``weight.t()`` for its backward), and those views keep reading the buffer
after the group is freed, until backward has run. A fresh buffer per gather
was safe because the views kept its memory alive. So a buffer is reused (and
a lent store buffer handed back) only when nothing but its owner refers to
its storage: :func:`storage_users` counts the references.]
"""

from __future__ import annotations

from collections import defaultdict

import torch

__all__ = ["CAN_COUNT_USERS", "FlatBufferPool", "storage_users"]

_use_count = getattr(torch._C, "_storage_Use_Count", None)
#: whether this torch can count a storage's references (else nothing is reused)
CAN_COUNT_USERS = _use_count is not None


def storage_users(t: torch.Tensor) -> int | None:
    """References to ``t``'s storage (tensors and views), or None where torch cannot say."""
    if _use_count is None:
        return None
    return int(_use_count(t.untyped_storage()._cdata))


class FlatBufferPool:
    """Released flat buffers of the CPU, reused by size, at most ``cap_bytes`` kept."""

    def __init__(self, *, cap_bytes: int) -> None:
        if cap_bytes < 0:
            raise ValueError(f"cap_bytes must be >= 0, got {cap_bytes}")
        self.cap_bytes = int(cap_bytes)
        self.cached_bytes = 0
        self.reused = 0  # buffers handed out again (for tests and telemetry)
        self._free: dict[tuple[int, torch.dtype], list[torch.Tensor]] = defaultdict(list)

    def take(self, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialized 1-D buffer: a kept one of this size, else a new one.

        The caller notes :func:`storage_users` of it and passes that to :meth:`give`.
        """
        if device.type == "cpu":
            kept = self._free.get((numel, dtype))
            if kept:
                buf = kept.pop()
                self.cached_bytes -= buf.nbytes
                self.reused += 1
                return buf
        return torch.empty(numel, dtype=dtype, device=device)

    def give(self, buf: torch.Tensor, *, users: int | None) -> None:
        """Keep ``buf`` for reuse if it is a CPU buffer that fits and nothing refers to
        its storage beyond the ``users`` counted when it was taken (else drop it: views
        saved for backward keep its memory alive)."""
        if buf.device.type != "cpu" or self.cached_bytes + buf.nbytes > self.cap_bytes:
            return
        now = storage_users(buf)
        if users is None or now is None or now > users:
            return
        self._free[(buf.numel(), buf.dtype)].append(buf)
        self.cached_bytes += buf.nbytes

    def clear(self) -> None:
        """Drop every kept buffer."""
        self._free.clear()
        self.cached_bytes = 0
