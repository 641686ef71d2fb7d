"""Memory tiers of the store: host (aligned buffer pool) and device (CUDA, or a
host-memory stand-in on machines without a GPU).

A tier hands out :class:`Block` objects within its byte budget and copies
between blocks; it knows nothing of tensors' names or states. The budget is
enforced here as a last line of defence; the store makes room (evicts) before
it allocates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tiermem.buffers import ALIGNMENT, HostBuffer, HostBufferPool, round_up
from tiermem.store.errors import StoreBudgetError
from tiermem.store.states import TierKind

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def dtype_name(dtype: torch.dtype | str) -> str:
    """The store's name of a supported dtype, or ValueError naming what is allowed."""
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
        if key in DTYPES:
            return key
    elif dtype in DTYPE_NAMES:
        return DTYPE_NAMES[dtype]
    raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype!r}")


class Completion:
    """Something in flight that can be polled and waited for."""

    def done(self) -> bool:
        raise NotImplementedError

    def wait(self) -> None:
        raise NotImplementedError


class DoneCompletion(Completion):
    """A transfer that finished when it was started (synchronous copy)."""

    def done(self) -> bool:
        return True

    def wait(self) -> None:
        return None


class CudaEventCompletion(Completion):
    """A copy queued on a CUDA stream, finished when its event has fired."""

    def __init__(self, event) -> None:
        self.event = event

    def done(self) -> bool:
        return bool(self.event.query())

    def wait(self) -> None:
        self.event.synchronize()


@dataclass(eq=False)
class Block:
    """One allocation in a memory tier: ``data`` is a flat uint8 tensor of
    ``capacity`` bytes (4 KiB-aligned on the host), of which the tensor uses
    the first ``nbytes``."""

    data: torch.Tensor
    nbytes: int
    capacity: int
    owner: HostBuffer | None = None

    def view(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """The tensor's flat typed view (shares memory)."""
        return self.data[: self.nbytes].view(dtype)[:numel]


class MemoryTier:
    """Budget accounting shared by the memory tiers."""

    kind: TierKind

    def __init__(self, budget: int) -> None:
        if budget < 0:
            raise ValueError(f"{self.kind.name} budget must be >= 0, got {budget}")
        self.budget = int(budget)
        self.used = 0
        self.peak = 0

    def footprint(self, nbytes: int) -> int:
        """Bytes of budget a tensor of ``nbytes`` takes here."""
        return round_up(max(nbytes, 1), ALIGNMENT)

    @property
    def free(self) -> int:
        return self.budget - self.used

    def _charge(self, capacity: int, name: str) -> None:
        if self.used + capacity > self.budget:
            raise StoreBudgetError(
                f"{self.kind.name} tier: allocating {capacity} bytes for {name!r} would exceed "
                f"its budget of {self.budget} bytes ({self.used} in use)"
            )
        self.used += capacity
        self.peak = max(self.peak, self.used)

    def allocate(self, nbytes: int, name: str) -> Block:
        raise NotImplementedError

    def free_block(self, block: Block) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        return {"used": self.used, "budget": self.budget, "peak": self.peak}

    def close(self) -> None:
        pass


class HostTier(MemoryTier):
    """Host memory from a :class:`~tiermem.buffers.HostBufferPool` (4 KiB-aligned,
    so NVMe transfers run with O_DIRECT; optionally mlock'ed and CUDA-pinned)."""

    kind = TierKind.HOST

    def __init__(self, budget: int, *, pin_memory: bool = False) -> None:
        super().__init__(budget)
        self.pool = (
            HostBufferPool(
                budget,
                lock=pin_memory,
                pin=bool(pin_memory and torch.cuda.is_available()),
            )
            if budget > 0
            else None
        )

    def allocate(self, nbytes: int, name: str) -> Block:
        capacity = self.footprint(nbytes)
        self._charge(capacity, name)
        assert self.pool is not None
        try:
            buf = self.pool.allocate(capacity)
        except BaseException:
            self.used -= capacity
            raise
        return Block(data=buf.tensor(), nbytes=nbytes, capacity=capacity, owner=buf)

    def free_block(self, block: Block) -> None:
        self.used -= block.capacity
        if block.owner is not None:
            block.owner.release()
            block.owner = None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.trim()


class DeviceTier(MemoryTier):
    """CUDA memory where a GPU exists; otherwise plain CPU tensors under the
    same budget, so every path of the store runs on CPU-only machines.

    Copies to and from the host run on a side stream and are tracked by
    events (on the stand-in they are synchronous).
    """

    kind = TierKind.DEVICE

    def __init__(self, budget: int, *, device: torch.device | None = None) -> None:
        super().__init__(budget)
        if device is None:
            device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        self.device = device
        self.is_cuda = device.type == "cuda"
        self._stream = torch.cuda.Stream(device=device) if self.is_cuda else None

    def allocate(self, nbytes: int, name: str) -> Block:
        capacity = self.footprint(nbytes)
        self._charge(capacity, name)
        data = torch.empty(capacity, dtype=torch.uint8, device=self.device)
        return Block(data=data, nbytes=nbytes, capacity=capacity)

    def free_block(self, block: Block) -> None:
        self.used -= block.capacity
        block.data = torch.empty(0, dtype=torch.uint8)

    def copy_in(self, dst: Block, src: Block) -> Completion:
        """Start host ``src`` -> device ``dst``; the host block must stay alive until done."""
        return self._side_stream_copy(dst, src, device_data=dst.data)

    def copy_out(self, dst: Block, src: Block) -> Completion:
        """Start device ``src`` -> host ``dst`` after the caller's queued work."""
        return self._side_stream_copy(dst, src, device_data=src.data)

    def _side_stream_copy(self, dst: Block, src: Block, *, device_data: torch.Tensor) -> Completion:
        n = src.nbytes
        if not self.is_cuda:
            dst.data[:n].copy_(src.data[:n])
            return DoneCompletion()
        # [Note: the side stream waits for the caller's stream so a copy never
        #  races work queued on the device block earlier; record_stream tells the
        #  caching allocator that the side stream uses the device block.]
        stream = self._stream
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            dst.data[:n].copy_(src.data[:n], non_blocking=True)
            device_data.record_stream(stream)
            event = torch.cuda.Event()
            event.record(stream)
        return CudaEventCompletion(event)

    def copy_within(self, dst: Block, src: Block) -> Completion:
        """Device -> device (refreshing a stale copy)."""
        n = src.nbytes
        dst.data[:n].copy_(src.data[:n])
        return DoneCompletion()
