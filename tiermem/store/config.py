"""Configuration of a :class:`~tiermem.store.TensorStore`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from tiermem.aio import AioConfig


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """Budgets and places of a :class:`TensorStore`.

    Attributes:
        device_bytes: device tier budget (CUDA memory; host memory standing in
            for it on machines without a GPU).
        host_bytes: host tier budget (aligned, optionally pinned buffers).
        nvme_paths: swap directories, one stripe each; empty: no NVMe tier.
        nvme_bytes: NVMe budget, preallocated at open; None: grow on demand
            within the filesystems' free space.
        prefetch_bytes: bytes of upcoming fetches loaded ahead while replaying
            the schedule or following a predicted order, at the start (at least
            ~2 x queue_depth x block_size to keep the disks busy); the window
            grows where prefetches land too late, up to half of ``host_bytes``
            (:mod:`tiermem.store.readahead`); 0 turns prefetch off.
        checksum: crc32c every extent on write, verify on read.
        persistent: keep swap files and an allocation table at close and
            reopen them (NVMe-homed tensors only); else files are scratch.
        pin_memory: mlock host buffers (and register them with CUDA).
        aio: I/O engine settings of each swap file.
        stripe_unit: bytes dealt to one swap file before the next.
    """

    device_bytes: int = 0
    host_bytes: int = 1 << 30
    nvme_paths: tuple[str | os.PathLike, ...] = ()
    nvme_bytes: int | None = None
    prefetch_bytes: int = 64 << 20
    checksum: bool = True
    persistent: bool = False
    pin_memory: bool = False
    aio: AioConfig = field(default_factory=AioConfig)
    stripe_unit: int = 1 << 20

    def __post_init__(self) -> None:
        if isinstance(self.nvme_paths, (str, os.PathLike)):
            object.__setattr__(self, "nvme_paths", (self.nvme_paths,))
        else:
            object.__setattr__(self, "nvme_paths", tuple(self.nvme_paths))
        for fname in ("device_bytes", "host_bytes", "prefetch_bytes"):
            v = getattr(self, fname)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"StoreConfig.{fname}: expected an int >= 0, got {v!r}")
        if self.nvme_bytes is not None and (
            isinstance(self.nvme_bytes, bool)
            or not isinstance(self.nvme_bytes, int)
            or self.nvme_bytes < 0
        ):
            raise ValueError(
                f"StoreConfig.nvme_bytes: expected None or an int >= 0, got {self.nvme_bytes!r}"
            )
        if not isinstance(self.aio, AioConfig):
            raise ValueError(f"StoreConfig.aio: expected an AioConfig, got {self.aio!r}")
        u = self.stripe_unit
        if not isinstance(u, int) or u <= 0 or u % 4096:
            raise ValueError(
                f"StoreConfig.stripe_unit: expected a positive multiple of 4096, got {u!r}"
            )
        if self.persistent and not self.nvme_paths:
            raise ValueError("StoreConfig.persistent needs nvme_paths")
