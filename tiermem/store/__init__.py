"""Tiered tensor store: named flat tensors paged between device, host and NVMe."""

from tiermem.store.errors import (
    StoreBudgetError,
    StoreCorruptionError,
    StoreError,
    StoreScheduleWarning,
)
from tiermem.store.states import IllegalTransition, Residency, TierKind

__all__ = [
    "IllegalTransition",
    "Residency",
    "StoreBudgetError",
    "StoreCorruptionError",
    "StoreError",
    "StoreScheduleWarning",
    "TierKind",
]
