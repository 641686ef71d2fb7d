"""Where a stage 3 rank keeps its parameter shards between uses: device, host or NVMe.

A :class:`ParamHome` stores one compute-dtype shard per group, keyed by the
group index. :meth:`ParamHome.load` hands the shard out on the compute device
for an all-gather; :meth:`ParamHome.open_for_update` hands out the tensor the
optimizer writes updated values into (on the optimizer's side: host memory
for a host home, so the CPU Adam writes its bf16/fp16 copy straight into the
parameter tier).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["DeviceParamHome", "HostParamHome", "ParamHome"]


class ParamHome(ABC):
    """Keeps parameter shards; hands them out for gathers and updates."""

    #: the offload device name this home implements ("none", "cpu", "nvme")
    placement: str = ""
    #: whether :meth:`load` returns the shard's own storage, valid until the next
    #: update (so a one-shard group may use it as its flat buffer), rather than a
    #: buffer valid only until :meth:`unload`
    stable: bool = True

    @abstractmethod
    def put(self, key: int, shard: torch.Tensor) -> None:
        """Take ``shard`` (1-D, compute dtype) as the initial values of ``key``."""

    @abstractmethod
    def load(self, key: int) -> torch.Tensor:
        """The shard on the compute device, valid until :meth:`unload`."""

    def unload(self, key: int) -> None:
        """The tensor from :meth:`load` is no longer used."""
        return None

    def lend(self, key: int) -> torch.Tensor | None:
        """The shard itself (compute dtype, on the compute device), for a one-shard
        group to use as its gathered buffer until :meth:`give_back`; None when this
        home cannot lend it now (the caller copies from :meth:`load` instead)."""
        return self.load(key) if self.stable else None

    def give_back(self, key: int) -> None:
        """The tensor from :meth:`lend` is no longer used."""
        self.unload(key)

    @abstractmethod
    def open_for_update(self, key: int) -> torch.Tensor:
        """A tensor to write new values of ``key`` into (any device), until :meth:`close_update`."""

    def close_update(self, key: int) -> None:
        """The values written into :meth:`open_for_update`'s tensor are final."""
        return None

    def close(self) -> None:
        """Free everything."""
        return None

    def numel(self, key: int) -> int:
        """Elements of shard ``key``."""
        raise NotImplementedError

    def drop(self, key: int) -> None:
        """Forget shard ``key`` (its group is gone)."""
        raise NotImplementedError


class _InMemoryParamHome(ParamHome):
    """Shards kept as tensors in a dict (device or host memory); subclasses say how they
    are put and loaded."""

    def __init__(self) -> None:
        self._shards: dict[int, torch.Tensor] = {}

    def open_for_update(self, key: int) -> torch.Tensor:
        return self._shards[key]

    def numel(self, key: int) -> int:
        return self._shards[key].numel()

    def drop(self, key: int) -> None:
        self._shards.pop(key, None)

    def close(self) -> None:
        self._shards.clear()


class DeviceParamHome(_InMemoryParamHome):
    """Shards stay on the compute device (``offload_param.device: none``)."""

    placement = "none"

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device

    def put(self, key: int, shard: torch.Tensor) -> None:
        self._shards[key] = shard.detach().to(self.device).contiguous().clone()

    def load(self, key: int) -> torch.Tensor:
        return self._shards[key]


class HostParamHome(_InMemoryParamHome):
    """Shards live in host memory (``offload_param.device: cpu``), pinned on CUDA machines.

    ``load`` copies to the device (no copy when the compute device is the CPU).
    """

    placement = "cpu"

    def __init__(self, device: torch.device, *, pin_memory: bool = True) -> None:
        super().__init__()
        self.device = device
        self.pin = bool(pin_memory) and device.type == "cuda"

    def put(self, key: int, shard: torch.Tensor) -> None:
        host = torch.empty(shard.numel(), dtype=shard.dtype, pin_memory=self.pin)
        host.copy_(shard.reshape(-1))
        self._shards[key] = host

    def load(self, key: int) -> torch.Tensor:
        host = self._shards[key]
        if self.device.type == "cpu":
            return host
        return host.to(self.device, non_blocking=self.pin)
