"""DeepSpeed's warmup learning-rate schedules as real ``torch.optim`` LR schedulers.

``WarmupLR``, ``WarmupDecayLR`` and ``WarmupCosineLR`` follow the formulas
DeepSpeed documents for its schedulers of the same names, written as
closed-form functions of the step index ``i`` (:attr:`last_epoch`, the number
of :meth:`step` calls so far). With ``W = max(2, warmup_num_steps)``,
``T = total_num_steps`` and the warmup curve ``g(i)`` = ``log(i + 1) / log(W)``
(``"log"``) or ``i / W`` (``"linear"``):

* WarmupLR: ``lr = min_lr + (max_lr - min_lr) * gamma``, ``gamma = g(i)`` while
  ``i < W``, then 1.
* WarmupDecayLR: the same, but after warmup
  ``gamma = max(0, (T - i) / max(1, T - W))``: back to ``min_lr`` at ``T``.
* WarmupCosineLR: ``lr = base_lr * ratio`` with the optimizer's own lr as
  ``base_lr``; ``ratio = min_ratio + (1 - min_ratio) * g(i)`` while ``i < W``,
  then ``max(0, cos_min + (1 - cos_min) * (1 + cos(pi * k / max(1, T - W))) / 2)``
  with ``k = min(i - W + 1, max(1, T - W))``.

[Note: the schedulers follow torch's convention: constructing one applies
``lr(0)``, and after ``n`` calls of :meth:`step` (one per optimizer step) the
next optimizer step runs with ``lr(n)``. DeepSpeed applies ``lr(n - 1)`` to
step ``n`` and leaves step 0 at lr 0 (its schedulers start at index -1), so
the same config gives tiermem the DeepSpeed curve one step earlier. Past
``total_num_steps`` the cosine stays at ``cos_min_ratio``; DeepSpeed's
formula would rise again there.]

Example::

    from tiermem.engine.config import parse_config
    from tiermem.engine.lr_schedules import build_lr_scheduler

    cfg = parse_config("ds_config.json")
    scheduler = build_lr_scheduler(optimizer, cfg.scheduler, total_steps=10_000)
    for batch in loader:
        ...
        optimizer.step()
        scheduler.step()
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from tiermem.engine.config import all_key_paths
from tiermem.engine.config_base import AUTO, ConfigError, ParseContext
from tiermem.engine.config_sections import (
    SchedulerConfig,
    WarmupCosineLRParams,
    WarmupDecayLRParams,
    WarmupLRParams,
)

WARMUP_TYPES = ("log", "linear")

__all__ = ["WarmupCosineLR", "WarmupDecayLR", "WarmupLR", "build_lr_scheduler"]


def _warmup_steps(warmup_num_steps: int) -> int:
    if isinstance(warmup_num_steps, bool) or not isinstance(warmup_num_steps, int):
        raise TypeError(f"warmup_num_steps: expected an integer, got {warmup_num_steps!r}")
    if warmup_num_steps < 0:
        raise ValueError(f"warmup_num_steps: expected an integer >= 0, got {warmup_num_steps}")
    # [Note: DeepSpeed raises fewer than 2 warmup steps to 2 (log(1) would be 0).]
    return max(2, warmup_num_steps)


def _check_warmup_type(warmup_type: str) -> str:
    if warmup_type not in WARMUP_TYPES:
        raise ValueError(f'warmup_type: expected "log" or "linear", got {warmup_type!r}')
    return warmup_type


def _check_total(total_num_steps: int) -> int:
    if isinstance(total_num_steps, bool) or not isinstance(total_num_steps, int):
        raise TypeError(f"total_num_steps: expected an integer, got {total_num_steps!r}")
    if total_num_steps < 1:
        raise ValueError(f"total_num_steps: expected an integer >= 1, got {total_num_steps}")
    return total_num_steps


def _warmup_fraction(step: int, warmup_steps: int, warmup_type: str) -> float:
    """``g(step)`` in [0, 1) for ``step < warmup_steps``."""
    if warmup_type == "log":
        return math.log(step + 1) / math.log(warmup_steps)
    return step / warmup_steps


def _group_lrs(optimizer: Optimizer) -> list[float]:
    return [float(group.get("initial_lr", group["lr"])) for group in optimizer.param_groups]


def _per_group(
    value: float | Sequence[float] | None, optimizer: Optimizer, name: str
) -> list[float]:
    groups = len(optimizer.param_groups)
    if value is None:
        return _group_lrs(optimizer)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)] * groups
    values = [float(v) for v in value]
    if len(values) != groups:
        raise ValueError(
            f"{name}: expected one value per optimizer parameter group ({groups}), "
            f"got {len(values)}"
        )
    return values


class WarmupLR(LRScheduler):
    """Warm up from ``warmup_min_lr`` to ``warmup_max_lr`` over ``warmup_num_steps``,
    then hold ``warmup_max_lr``.

    Args:
        optimizer: the optimizer whose ``param_groups`` lrs are set.
        warmup_min_lr: lr at step 0 (a number, or one per parameter group).
        warmup_max_lr: lr after warmup; None: each group's lr at construction.
        warmup_num_steps: steps of warmup (fewer than 2 act as 2, as in DeepSpeed).
        warmup_type: ``"log"`` or ``"linear"`` warmup curve.
        last_epoch: steps already taken minus one (-1: a fresh schedule).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        warmup_min_lr: float | Sequence[float] = 0.0,
        warmup_max_lr: float | Sequence[float] | None = None,
        warmup_num_steps: int = 1000,
        warmup_type: str = "log",
        last_epoch: int = -1,
    ) -> None:
        self.min_lrs = _per_group(warmup_min_lr, optimizer, "warmup_min_lr")
        self.max_lrs = _per_group(warmup_max_lr, optimizer, "warmup_max_lr")
        self.warmup_num_steps = _warmup_steps(warmup_num_steps)
        self.warmup_type = _check_warmup_type(warmup_type)
        super().__init__(optimizer, last_epoch)

    def _gamma(self, step: int) -> float:
        """Share of ``max_lr - min_lr`` added to ``min_lr`` at ``step``."""
        if step < self.warmup_num_steps:
            return _warmup_fraction(step, self.warmup_num_steps, self.warmup_type)
        return 1.0

    def lr_at(self, step: int) -> list[float]:
        """The lr of each parameter group at step index ``step`` (closed form)."""
        step = max(0, step)
        gamma = self._gamma(step)
        return [lo + (hi - lo) * gamma for lo, hi in zip(self.min_lrs, self.max_lrs, strict=True)]

    def get_lr(self) -> list[float]:  # noqa: D102 - torch's contract
        return self.lr_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float]:
        return self.lr_at(self.last_epoch)


class WarmupDecayLR(WarmupLR):
    """:class:`WarmupLR`, then linear decay back to ``warmup_min_lr`` at ``total_num_steps``.

    Args:
        total_num_steps: the step at which the lr reaches ``warmup_min_lr``.
        (others as :class:`WarmupLR`)
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        total_num_steps: int,
        warmup_min_lr: float | Sequence[float] = 0.0,
        warmup_max_lr: float | Sequence[float] | None = None,
        warmup_num_steps: int = 1000,
        warmup_type: str = "log",
        last_epoch: int = -1,
    ) -> None:
        self.total_num_steps = _check_total(total_num_steps)
        super().__init__(
            optimizer,
            warmup_min_lr=warmup_min_lr,
            warmup_max_lr=warmup_max_lr,
            warmup_num_steps=warmup_num_steps,
            warmup_type=warmup_type,
            last_epoch=last_epoch,
        )

    def _gamma(self, step: int) -> float:
        if step < self.warmup_num_steps:
            return _warmup_fraction(step, self.warmup_num_steps, self.warmup_type)
        decay_steps = max(1, self.total_num_steps - self.warmup_num_steps)
        return max(0.0, (self.total_num_steps - step) / decay_steps)


class WarmupCosineLR(LRScheduler):
    """A ratio of each group's own lr: warm up from ``warmup_min_ratio`` to 1 over
    ``warmup_num_steps``, then cosine decay to ``cos_min_ratio`` at ``total_num_steps``.

    Args:
        optimizer: the optimizer; its groups' lrs at construction are the peak lrs.
        total_num_steps: the step at which the ratio reaches ``cos_min_ratio``.
        warmup_min_ratio: ratio at step 0.
        warmup_num_steps: steps of warmup (fewer than 2 act as 2, as in DeepSpeed).
        cos_min_ratio: final ratio.
        warmup_type: ``"log"`` or ``"linear"`` warmup curve.
        last_epoch: steps already taken minus one (-1: a fresh schedule).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        total_num_steps: int,
        warmup_min_ratio: float = 0.0,
        warmup_num_steps: int = 1000,
        cos_min_ratio: float = 0.0001,
        warmup_type: str = "log",
        last_epoch: int = -1,
    ) -> None:
        self.total_num_steps = _check_total(total_num_steps)
        self.warmup_min_ratio = float(warmup_min_ratio)
        self.warmup_num_steps = _warmup_steps(warmup_num_steps)
        self.cos_min_ratio = float(cos_min_ratio)
        self.warmup_type = _check_warmup_type(warmup_type)
        super().__init__(optimizer, last_epoch)

    def ratio_at(self, step: int) -> float:
        """The multiplier of the groups' peak lrs at step index ``step``."""
        step = max(0, step)
        if step < self.warmup_num_steps:
            fraction = _warmup_fraction(step, self.warmup_num_steps, self.warmup_type)
            return self.warmup_min_ratio + (1.0 - self.warmup_min_ratio) * fraction
        decay_steps = max(1, self.total_num_steps - self.warmup_num_steps)
        done = min(step - self.warmup_num_steps + 1, decay_steps)
        cosine = (1.0 + math.cos(math.pi * done / decay_steps)) / 2.0
        return max(0.0, self.cos_min_ratio + (1.0 - self.cos_min_ratio) * cosine)

    def lr_at(self, step: int) -> list[float]:
        """The lr of each parameter group at step index ``step`` (closed form)."""
        ratio = self.ratio_at(step)
        return [float(base) * ratio for base in self.base_lrs]

    def get_lr(self) -> list[float]:  # noqa: D102 - torch's contract
        return self.lr_at(self.last_epoch)

    def _get_closed_form_lr(self) -> list[float]:
        return self.lr_at(self.last_epoch)


def _resolve_steps(value: Any, given: int | None, key: str, kwarg: str) -> int:
    if value is not AUTO:
        return value
    if given is None:
        raise ConfigError(
            f'is "auto", so the caller must supply it: pass {kwarg}= to build_lr_scheduler '
            "or write a number in the config",
            path=f"scheduler.params.{key}",
        )
    if isinstance(given, bool) or not isinstance(given, int) or given < 0:
        raise ValueError(f"{kwarg}: expected a non-negative integer, got {given!r}")
    return given


def build_lr_scheduler(
    optimizer: Optimizer,
    scheduler_cfg: SchedulerConfig | Mapping[str, Any],
    *,
    total_steps: int | None = None,
    warmup_steps: int | None = None,
) -> LRScheduler:
    """The LR scheduler a config's ``scheduler`` section describes.

    Args:
        optimizer: the optimizer to schedule.
        scheduler_cfg: the parsed section (``cfg.scheduler``) or its JSON dict.
        total_steps: optimizer steps of the whole run; used where
            ``total_num_steps`` is ``"auto"``.
        warmup_steps: used where ``warmup_num_steps`` is ``"auto"``.

    ``"auto"`` in ``warmup_min_lr`` means 0 and in ``warmup_max_lr`` the
    optimizer's lr (Hugging Face's rules). A ``last_batch_iteration`` k >= 0
    resumes the schedule after k + 1 steps.

    Raises:
        ConfigError: an ``"auto"`` step count without the matching argument,
            or per-group lr lists whose length is not the number of groups.
    """
    if isinstance(scheduler_cfg, Mapping):
        scheduler_cfg = SchedulerConfig.parse(
            scheduler_cfg, ParseContext(key_index=all_key_paths())
        )
    if not isinstance(scheduler_cfg, SchedulerConfig):
        raise TypeError(
            f"scheduler_cfg: expected a SchedulerConfig or dict, got {type(scheduler_cfg).__name__}"
        )
    params = scheduler_cfg.params
    warmup = _resolve_steps(
        params.warmup_num_steps, warmup_steps, "warmup_num_steps", "warmup_steps"
    )
    resume = params.last_batch_iteration
    if resume >= 0:
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
    common: dict[str, Any] = {
        "warmup_num_steps": warmup,
        "warmup_type": params.warmup_type,
        "last_epoch": resume,
    }
    if isinstance(params, WarmupCosineLRParams):
        total = _resolve_steps(
            params.total_num_steps, total_steps, "total_num_steps", "total_steps"
        )
        return WarmupCosineLR(
            optimizer,
            total_num_steps=max(1, total),
            warmup_min_ratio=params.warmup_min_ratio,
            cos_min_ratio=params.cos_min_ratio,
            **common,
        )
    assert isinstance(params, WarmupLRParams)
    lrs = {
        "warmup_min_lr": 0.0 if params.warmup_min_lr is AUTO else params.warmup_min_lr,
        "warmup_max_lr": None if params.warmup_max_lr is AUTO else params.warmup_max_lr,
    }
    for key, value in lrs.items():
        if isinstance(value, tuple) and len(value) != len(optimizer.param_groups):
            raise ConfigError(
                f"expected one lr per optimizer parameter group ({len(optimizer.param_groups)}), "
                f"got {len(value)}",
                path=f"scheduler.params.{key}",
            )
    if isinstance(params, WarmupDecayLRParams):
        total = _resolve_steps(
            params.total_num_steps, total_steps, "total_num_steps", "total_steps"
        )
        return WarmupDecayLR(optimizer, total_num_steps=max(1, total), **lrs, **common)
    return WarmupLR(optimizer, **lrs, **common)
