"""Bookkeeping records of the store: one entry per tensor, one copy record per
(tensor, tier), and the transfers in flight. Internal to the store."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from tiermem.store.nvme import Extent
from tiermem.store.states import Residency, TierKind
from tiermem.store.tiers import Block

R = Residency


@dataclass(eq=False)
class CopyRecord:
    """One tensor's copy in one tier: its state, memory and who uses it."""

    tier: TierKind
    state: Residency = R.ABSENT
    block: Block | None = None
    refs: int = 0  # fetched by the caller and not yet released
    pins: int = 0  # explicit pins
    holds: int = 0  # source of an in-flight copy to another tier
    load: LoadOp | None = None
    flush: FlushOp | None = None
    last_use: int = 0
    prefetched: bool = False  # brought in ahead of use, not yet fetched
    failed: BaseException | None = None  # a prefetch's error, raised by the next fetch


@dataclass(eq=False)
class EntryRecord:
    """One registered tensor: shape, home, its copies and its NVMe extent."""

    name: str
    dtype: torch.dtype
    numel: int
    nbytes: int
    home: TierKind
    copies: dict[TierKind, CopyRecord]
    extent: Extent | None = None
    crc: int | None = None


@dataclass(eq=False)
class LoadOp:
    """Bytes arriving into ``copy`` (``DEVICE`` loads may first stage in HOST: ``dep``)."""

    entry: EntryRecord
    copy: CopyRecord
    src: TierKind
    dirty: bool  # filled from a copy newer than home
    started: float
    pending: list = field(default_factory=list)  # AioRequests or Completions
    source: CopyRecord | None = None  # held until the copy is done
    dep: LoadOp | None = None
    issued: bool = False
    finished: bool = False
    error: BaseException | None = None
    checksum: Future | None = None  # the CRC32C being computed after the read


@dataclass(eq=False)
class FlushOp:
    """A dirty host copy being written to a new NVMe extent."""

    entry: EntryRecord
    copy: CopyRecord
    extent: Extent
    crc: int | None
    evict: bool
    started: float
    pending: list = field(default_factory=list)
    finished: bool = False
    error: BaseException | None = None
    checksum: Future | None = None  # the CRC32C being computed while the write runs
