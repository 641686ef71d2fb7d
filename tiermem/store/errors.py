"""Exceptions and warnings of the tiered store."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A store operation failed; the message names the tensor, tier or file involved."""


class StoreBudgetError(StoreError, MemoryError):
    """A tier cannot make room: its budget is held by pinned or in-use copies."""


class StoreCorruptionError(StoreError):
    """An extent read back from NVMe does not match the checksum written with it."""


class StoreScheduleWarning(UserWarning):
    """A pass diverged from the recorded access schedule, which is dropped."""
