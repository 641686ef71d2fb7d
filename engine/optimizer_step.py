"""The sharded Adam/AdamW step, one implementation per placement of the optimizer states.

Each rank updates only its shards. A :class:`ShardOptimizer` owns the fp32
master copy and both moments of every shard (keyed by group index) and, per
step, receives each shard's fp32 gradient plus the tensor to write the new
compute-dtype parameters into:

* :class:`DeviceShardOptimizer` (``offload_optimizer.device: none`` on a CUDA
  device): states on the compute device, updated by ``torch.optim.AdamW``/``Adam``
  itself, so the arithmetic is exactly torch's.
* :class:`HostShardOptimizer` (``cpu``, and ``none`` when the compute device is
  the CPU): states in host memory, updated by
  the fused SIMD kernel (:func:`tiermem.adam.adam_step`) one sub-group of
  ``sub_group_size`` elements at a time; the kernel applies the inverse loss
  scale and clip coefficient and writes the bf16/fp16/fp32 parameter copy
  straight out.

Global-norm clipping and fp16 overflow checks happen in the engine before
:meth:`ShardOptimizer.step`; ``grad_scale`` (inverse loss scale times clip
coefficient) multiplies every gradient.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tiermem import adam

__all__ = [
    "AdamHyper",
    "DeviceShardOptimizer",
    "HostShardOptimizer",
    "ShardOptimizer",
    "StepItem",
    "split_by_hyper",
]


@dataclass(frozen=True, kw_only=True)
class AdamHyper:
    """Hyperparameters of one step (read from the optimizer's param group each step; no
    defaults here: they come from the config or the user's optimizer)."""

    lr: float
    betas: tuple[float, float]
    eps: float
    weight_decay: float
    adamw_mode: bool
    bias_correction: bool


@dataclass(frozen=True)
class StepItem:
    """One shard to update: its fp32 gradient and where its new parameters go.

    ``open_grad()`` returns the shard's fp32 gradient (scaled in place by the
    optimizer, which owns it until ``close_grad()``).

    ``open_target()`` returns the tensor to write the new compute-dtype
    parameters into and ``close_target()`` publishes them; an optimizer opens
    one item's target at a time, just before it writes it, so a parameter tier
    on NVMe never has to hold every shard in memory at once.

    ``segments`` gives hyperparameters per range ``[lo, hi)`` of the shard
    (parameters of different optimizer param groups, e.g. no weight decay on
    biases), covering it in order; empty means the step's ``hyper`` for all.
    """

    key: int
    open_grad: Callable[[], torch.Tensor]
    close_grad: Callable[[], None]
    open_target: Callable[[], torch.Tensor]
    close_target: Callable[[], None]
    step: int = 1
    segments: tuple[tuple[int, int, AdamHyper], ...] = ()


def split_by_hyper(
    item: StepItem, hyper: AdamHyper, lo: int, hi: int
) -> list[tuple[int, int, AdamHyper]]:
    """``[lo, hi)`` of ``item``'s shard cut where its hyperparameters change.

    [Note: Adam is elementwise, so updating a sub-group piecewise with each
    piece's hyperparameters is exactly updating every parameter with its own.]
    """
    if not item.segments:
        return [(lo, hi, hyper)]
    return [(max(lo, a), min(hi, b), h) for a, b, h in item.segments if max(lo, a) < min(hi, b)]


class ShardOptimizer(ABC):
    """Adam/AdamW states for this rank's shards, in one placement."""

    placement: str = ""

    @abstractmethod
    def add(self, key: int, master: torch.Tensor) -> None:
        """Register shard ``key`` with fp32 initial values ``master`` (copied)."""

    @abstractmethod
    def step(self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float) -> None:
        """One update of every shard in ``items`` (each at its ``item.step``)."""

    @abstractmethod
    def state(self, key: int) -> dict[str, torch.Tensor]:
        """Copies of shard ``key``'s ``master``, ``exp_avg`` and ``exp_avg_sq`` (host, fp32)."""

    def drop(self, key: int) -> None:
        """Forget shard ``key`` (its group is gone, or it is about to be added anew)."""
        raise NotImplementedError

    def close(self) -> None:
        """Free the states."""
        return None


def _write_out(item: StepItem, values: torch.Tensor) -> None:
    target = item.open_target()
    target.copy_(values.to(target.device))
    item.close_target()


class DeviceShardOptimizer(ShardOptimizer):
    """States on the compute device; the update is torch's own AdamW/Adam."""

    placement = "none"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._master: dict[int, torch.Tensor] = {}
        self._torch_opt: torch.optim.Optimizer | None = None
        self._adamw_mode: bool | None = None

    def add(self, key: int, master: torch.Tensor) -> None:
        if self._torch_opt is not None:
            raise RuntimeError("shards must all be added before the first step")
        self._master[key] = master.detach().to(self.device, torch.float32).clone()

    def _optimizer(self, hyper: AdamHyper) -> torch.optim.Optimizer:
        if self._torch_opt is None or self._adamw_mode != hyper.adamw_mode:
            if self._torch_opt is not None:
                raise RuntimeError("adamw_mode cannot change between steps")
            cls = torch.optim.AdamW if hyper.adamw_mode else torch.optim.Adam
            self._torch_opt = cls(list(self._master.values()), lr=hyper.lr)
            self._adamw_mode = hyper.adamw_mode
        return self._torch_opt

    def step(self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float) -> None:
        if not hyper.bias_correction:
            raise ValueError("the device optimizer needs bias_correction=True (torch's Adam)")
        # [Note: torch's optimizer takes one hyperparameter set per step here, so the
        #  items are stepped in batches of equal hyperparameters (torch skips the
        #  masters whose grad is None). A shard split between param groups with
        #  different hyperparameters cannot be, and is refused.]
        batches: dict[AdamHyper, list[StepItem]] = {}
        for item in items:
            hypers = {h for _, _, h in item.segments}
            if len(hypers) > 1:
                raise NotImplementedError(
                    "optimizer param groups with different hyperparameters within one module "
                    'need the CPU Adam: set "offload_optimizer": {"device": "cpu"} (or nvme)'
                )
            batches.setdefault(hypers.pop() if hypers else hyper, []).append(item)
        for batch_hyper, batch in batches.items():
            self._step_batch(batch, batch_hyper, grad_scale=grad_scale)

    def _step_batch(
        self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float
    ) -> None:
        opt = self._optimizer(hyper)
        group = opt.param_groups[0]
        group.update(lr=hyper.lr, betas=hyper.betas, eps=hyper.eps, weight_decay=hyper.weight_decay)
        for master in self._master.values():
            master.grad = None
        for item in items:
            grad = item.open_grad().to(self.device)
            if grad_scale != 1.0:
                grad = grad * grad_scale
            self._master[item.key].grad = grad
        opt.step()
        for item in items:
            item.close_grad()
        for master in self._master.values():
            master.grad = None
        for item in items:
            _write_out(item, self._master[item.key])

    def state(self, key: int) -> dict[str, torch.Tensor]:
        master = self._master[key]
        st = self._torch_opt.state.get(master, {}) if self._torch_opt is not None else {}
        zeros = torch.zeros_like(master)
        return {
            "master": master.detach().cpu().clone(),
            "exp_avg": st.get("exp_avg", zeros).detach().cpu().clone(),
            "exp_avg_sq": st.get("exp_avg_sq", zeros).detach().cpu().clone(),
        }

    def drop(self, key: int) -> None:
        if self._torch_opt is not None:
            raise RuntimeError("shards cannot be dropped after the first step")
        self._master.pop(key, None)

    def close(self) -> None:
        self._master.clear()
        self._torch_opt = None


def _host_grad(grad: torch.Tensor) -> torch.Tensor:
    if grad.device.type != "cpu":
        grad = grad.cpu()
    return grad.contiguous()


def _kernel(
    states: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grad: torch.Tensor,
    out: torch.Tensor,
    hyper: AdamHyper,
    *,
    step: int,
    grad_scale: float,
) -> None:
    master, m, v = states
    adam.adam_step(
        master,
        m,
        v,
        grad,
        step=step,
        lr=hyper.lr,
        betas=hyper.betas,
        eps=hyper.eps,
        weight_decay=hyper.weight_decay,
        adamw_mode=hyper.adamw_mode,
        bias_correction=hyper.bias_correction,
        clip_coef=grad_scale,
        param_out=out,
    )


class _HostTarget:
    """An item's parameter target as a contiguous host tensor for the CPU kernel.

    When the target is elsewhere (a GPU tensor) the kernel writes a host
    staging tensor that is copied over on exit.
    """

    def __init__(self, item: StepItem) -> None:
        self.item = item
        self.target: torch.Tensor | None = None
        self.host: torch.Tensor | None = None

    def __enter__(self) -> torch.Tensor:
        self.target = self.item.open_target()
        direct = self.target.device.type == "cpu" and self.target.is_contiguous()
        self.host = (
            self.target if direct else torch.empty(self.target.numel(), dtype=self.target.dtype)
        )
        return self.host

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if self.host is not self.target:
                self.target.copy_(self.host)
            self.item.close_target()


class HostShardOptimizer(ShardOptimizer):
    """States in host memory; the fused CPU Adam kernel per sub-group of ``sub_group_size``."""

    placement = "cpu"

    def __init__(self, *, sub_group_size: int, pin_memory: bool = False) -> None:
        if sub_group_size <= 0:
            raise ValueError(f"sub_group_size must be positive, got {sub_group_size}")
        self.sub_group_size = int(sub_group_size)
        self.pin = bool(pin_memory) and torch.cuda.is_available()
        self._states: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def add(self, key: int, master: torch.Tensor) -> None:
        n = master.numel()
        values = torch.empty(n, dtype=torch.float32, pin_memory=self.pin)
        values.copy_(master.reshape(-1))
        m = torch.zeros(n, dtype=torch.float32, pin_memory=self.pin)
        v = torch.zeros(n, dtype=torch.float32, pin_memory=self.pin)
        self._states[key] = (values, m, v)

    def step(self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float) -> None:
        for item in items:
            master, m, v = self._states[item.key]
            grad = _host_grad(item.open_grad())
            with _HostTarget(item) as out:
                n, chunk = master.numel(), self.sub_group_size
                for start in range(0, n, chunk):
                    for lo, hi, hp in split_by_hyper(item, hyper, start, min(n, start + chunk)):
                        _kernel(
                            (master[lo:hi], m[lo:hi], v[lo:hi]),
                            grad[lo:hi],
                            out[lo:hi],
                            hp,
                            step=item.step,
                            grad_scale=grad_scale,
                        )
            item.close_grad()

    def state(self, key: int) -> dict[str, torch.Tensor]:
        master, m, v = self._states[key]
        return {"master": master.clone(), "exp_avg": m.clone(), "exp_avg_sq": v.clone()}

    def drop(self, key: int) -> None:
        self._states.pop(key, None)

    def close(self) -> None:
        self._states.clear()
