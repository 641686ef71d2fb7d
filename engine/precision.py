"""Mixed precision: the compute dtype and the fp16 loss scale.

* fp32: parameters and compute in fp32.
* bf16: parameters and compute in bf16; the optimizer keeps fp32 masters.
  No loss scaling (bf16 has fp32's range).
* fp16: parameters and compute in fp16, fp32 masters; the loss is multiplied
  by a loss scale before backward and gradients by its inverse in the
  optimizer. A step whose gradients hold inf/NaN is skipped. The scale is
  either static (``loss_scale > 0``) or dynamic (``loss_scale == 0``):

  - start at ``2 ** initial_scale_power``;
  - on overflow, first use up ``hysteresis`` (each overflow costs one), then
    halve the scale (never below ``min_loss_scale``);
  - after ``loss_scale_window`` consecutive steps without overflow, double
    it (and restore the hysteresis budget);
  - with ``consecutive_hysteresis``, every step without overflow restores the
    hysteresis budget, so only overflows in a row lower the scale.

  These are the semantics DeepSpeed documents for its ``fp16`` section.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["DynamicLossScaler", "LossScaler", "PrecisionConfig", "StaticLossScaler", "make_scaler"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True, kw_only=True)
class PrecisionConfig:
    """The precision section the engine needs (from ``fp16``/``bf16`` in the config)."""

    kind: str = "fp32"
    loss_scale: float = 0.0
    initial_scale_power: int = 16
    loss_scale_window: int = 1000
    hysteresis: int = 2
    consecutive_hysteresis: bool = False
    min_loss_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in _DTYPES:
            raise ValueError(f"precision kind must be one of {sorted(_DTYPES)}, not {self.kind!r}")
        if self.loss_scale < 0:
            raise ValueError(f"fp16.loss_scale must be >= 0 (0 = dynamic), got {self.loss_scale}")
        if self.loss_scale_window < 1:
            raise ValueError(f"fp16.loss_scale_window must be >= 1, got {self.loss_scale_window}")
        if self.hysteresis < 1:
            raise ValueError(f"fp16.hysteresis must be >= 1, got {self.hysteresis}")
        if self.min_loss_scale <= 0:
            raise ValueError(f"fp16.min_loss_scale must be > 0, got {self.min_loss_scale}")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of parameters and compute."""
        return _DTYPES[self.kind]


class LossScaler:
    """A loss scale of 1 that never changes (fp32 and bf16)."""

    dynamic = False

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = float(scale)

    def update(self, overflow: bool) -> None:
        """Account for one optimizer step that did (or did not) overflow."""

    def state_dict(self) -> dict:
        """The scaler's state."""
        return {"scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s result."""
        self.scale = float(state["scale"])


class StaticLossScaler(LossScaler):
    """A fixed fp16 loss scale; an overflowing step is still skipped."""


class DynamicLossScaler(LossScaler):
    """The dynamic fp16 loss scale (see the module docstring)."""

    dynamic = True

    def __init__(
        self,
        *,
        initial_scale_power: int = 16,
        window: int = 1000,
        hysteresis: int = 2,
        consecutive_hysteresis: bool = False,
        min_scale: float = 1.0,
        factor: float = 2.0,
    ) -> None:
        super().__init__(2.0**initial_scale_power)
        self.window = int(window)
        self.hysteresis = int(hysteresis)
        self.consecutive_hysteresis = bool(consecutive_hysteresis)
        self.min_scale = float(min_scale)
        self.factor = float(factor)
        self.hysteresis_left = self.hysteresis
        self.good_steps = 0

    def update(self, overflow: bool) -> None:
        if overflow:
            self.good_steps = 0
            if self.hysteresis_left > 1:
                self.hysteresis_left -= 1
            else:
                self.scale = max(self.scale / self.factor, self.min_scale)
            return
        self.good_steps += 1
        if self.consecutive_hysteresis:
            self.hysteresis_left = self.hysteresis
        if self.good_steps % self.window == 0:
            self.scale *= self.factor
            self.hysteresis_left = self.hysteresis

    def state_dict(self) -> dict:
        return {
            "scale": self.scale,
            "hysteresis_left": self.hysteresis_left,
            "good_steps": self.good_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        self.scale = float(state["scale"])
        self.hysteresis_left = int(state["hysteresis_left"])
        self.good_steps = int(state["good_steps"])


def make_scaler(cfg: PrecisionConfig) -> LossScaler:
    """The scaler for ``cfg``: 1 for fp32/bf16, static or dynamic for fp16."""
    if cfg.kind != "fp16":
        return LossScaler(1.0)
    if cfg.loss_scale > 0:
        return StaticLossScaler(cfg.loss_scale)
    return DynamicLossScaler(
        initial_scale_power=cfg.initial_scale_power,
        window=cfg.loss_scale_window,
        hysteresis=cfg.hysteresis,
        consecutive_hysteresis=cfg.consecutive_hysteresis,
        min_scale=cfg.min_loss_scale,
    )
