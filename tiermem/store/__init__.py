"""Tiered tensor store: named flat tensors paged between device, host and NVMe."""

from tiermem.store.config import StoreConfig
from tiermem.store.errors import (
    StoreBudgetError,
    StoreCorruptionError,
    StoreError,
    StoreScheduleWarning,
)
from tiermem.store.states import IllegalTransition, Residency, TierKind
from tiermem.store.store import FetchHandle, TensorStore

__all__ = [
    "FetchHandle",
    "StoreConfig",
    "TensorStore",
    "IllegalTransition",
    "Residency",
    "StoreBudgetError",
    "StoreCorruptionError",
    "StoreError",
    "StoreScheduleWarning",
    "TierKind",
]
