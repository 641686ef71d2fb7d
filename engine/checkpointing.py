"""Activation checkpointing: torch.utils.checkpoint (non-reentrant), configured from the JSON.

Model code calls :meth:`ActivationCheckpointing.checkpoint` (the engine's
``engine.checkpoint``) where DeepSpeed code calls
``deepspeed.checkpointing.checkpoint``: the function's activations are not
kept; backward recomputes them from the saved inputs.

``activation_checkpointing.cpu_checkpointing: true`` keeps those saved
inputs (the checkpoints) in host memory: the function receives device copies
made inside the checkpointed region, so only the host copies outlive the
forward pass, and the recompute copies them back.

[Note: non-reentrant checkpointing works with the stage 3 hooks: the
recompute runs the modules' forward again, whose pre-hooks gather their
parameters (already gathered for backward, so only a reference count
changes), and the recomputed graph saves the parameters themselves, which
stay gathered until their gradients are reduced.]

``partition_activations``, ``contiguous_memory_optimization``,
``number_checkpoints``, ``synchronize_checkpoint_boundary`` and ``profile``
are DeepSpeed/Megatron model-parallel options without an effect here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

__all__ = ["ActivationCheckpointing", "checkpoint"]


def _map_tensors(values: tuple, fn: Callable[[torch.Tensor], torch.Tensor]) -> tuple:
    return tuple(fn(v) if isinstance(v, torch.Tensor) else v for v in values)


def checkpoint(
    function: Callable[..., Any],
    *args: Any,
    cpu_checkpointing: bool = False,
    **kwargs: Any,
) -> Any:
    """``function(*args, **kwargs)`` without keeping its activations (recomputed in backward).

    With ``cpu_checkpointing`` the tensor arguments kept for the recompute are
    host copies (gradients still flow to the originals).
    """
    if not cpu_checkpointing:
        return torch_checkpoint(function, *args, use_reentrant=False, **kwargs)
    devices = tuple(a.device if isinstance(a, torch.Tensor) else None for a in args)
    host_args = _map_tensors(args, lambda t: t.to("cpu", non_blocking=False))

    def run_on_device(*host: Any) -> Any:
        moved = tuple(
            h.to(d) if isinstance(h, torch.Tensor) and d is not None else h
            for h, d in zip(host, devices, strict=True)
        )
        return function(*moved, **kwargs)

    return torch_checkpoint(run_on_device, *host_args, use_reentrant=False)


class ActivationCheckpointing:
    """The engine's checkpointing policy, from the ``activation_checkpointing`` section."""

    def __init__(self, *, cpu_checkpointing: bool = False) -> None:
        self.cpu_checkpointing = bool(cpu_checkpointing)

    def checkpoint(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)``, checkpointed (see :func:`checkpoint`)."""
        return checkpoint(function, *args, cpu_checkpointing=self.cpu_checkpointing, **kwargs)
