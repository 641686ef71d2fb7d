"""Hugging Face integration: :class:`TiermemTrainer`, a ``transformers.Trainer`` on tiermem.

``pip install 'tiermem[hf]'`` brings transformers and accelerate; importing
this package does not import them, only ``TiermemTrainer`` does.

[Note: layering. This package sits above the engine, beside the CLI: it
imports ``tiermem.engine``; neither the core nor the engine imports it.]
"""

from __future__ import annotations

from typing import Any

from tiermem.hf.config import resolve_trainer_config
from tiermem.hf.pretrained import from_pretrained

__all__ = ["TiermemTrainer", "from_pretrained", "resolve_trainer_config"]


def __getattr__(name: str) -> Any:
    if name == "TiermemTrainer":
        from tiermem.hf.trainer import TiermemTrainer

        return TiermemTrainer
    raise AttributeError(f"module 'tiermem.hf' has no attribute {name!r}")
