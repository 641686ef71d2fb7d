"""The sharded Adam/AdamW step, one implementation per placement of the optimizer states.

Each rank updates only its shards. A :class:`ShardOptimizer` owns the fp32
master copy and both moments of every shard (keyed by group index) and, per
step, receives each shard's fp32 gradient plus the tensor to write the new
compute-dtype parameters into:

* :class:`DeviceShardOptimizer` (``offload_optimizer.device: none`` on a CUDA
  device): states on the compute device, updated with torch tensor ops in the
  order torch's single-tensor ``AdamW``/``Adam`` uses, one shard (and param
  group range) at a time.
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
    "STATE_KINDS",
    "ShardOptimizer",
    "StepItem",
    "split_by_hyper",
    "sub_groups",
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


def sub_groups(
    numel: int, size: int, starts: Sequence[int] | None = None, *, split: bool = False
) -> list[tuple[int, int]]:
    """``[lo, hi)`` sub-groups of a shard of ``numel`` elements.

    ``starts`` are the shard offsets where its parameters begin (``None``: the
    shard is one parameter). Without ``split`` a sub-group is a run of whole
    parameters of at most ``size`` elements, and a parameter larger than
    ``size`` is a sub-group of its own; with ``split`` the shard is cut every
    ``size`` elements, through parameters.

    [Note: this is DeepSpeed's meaning of ``sub_group_size``: an upper bound
    on a sub-group, never a reason to cut a parameter. Cutting every ``size``
    elements turned DeepSpeed's own NVMe test config (``sub_group_size`` 100)
    into ~84k store tensors at hidden 2048, each with its own I/O and
    bookkeeping.]
    """
    if numel <= 0:
        return []
    if split:
        return [(lo, min(numel, lo + size)) for lo in range(0, numel, size)]
    cuts = sorted({s for s in (starts or ()) if 0 < s < numel})
    out = []
    lo = 0
    for a, b in zip([0, *cuts], [*cuts, numel], strict=True):
        if a > lo and b - lo > size:  # adding [a, b) would overflow the group: close it at a
            out.append((lo, a))
            lo = a
    out.append((lo, numel))
    return out


class ShardOptimizer(ABC):
    """Adam/AdamW states for this rank's shards, in one placement."""

    placement: str = ""

    @abstractmethod
    def add(self, key: int, master: torch.Tensor, starts: Sequence[int] | None = None) -> None:
        """Register shard ``key`` with fp32 initial values ``master`` (copied).

        ``starts``: the shard offsets where its parameters begin (see :func:`sub_groups`).
        """

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


#: the fp32 states of a shard, in the order the shard optimizers keep them
STATE_KINDS = ("master", "exp_avg", "exp_avg_sq")


def _torch_adam(
    states: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grad: torch.Tensor,
    hyper: AdamHyper,
    *,
    step: int,
    grad_scale: float,
) -> None:
    """One Adam/AdamW update of ``states`` (master, exp_avg, exp_avg_sq views) in place.

    [Note: the operations and their order are those of torch's single-tensor
    ``Adam``/``AdamW`` (decoupled decay ``p *= 1 - lr*wd``, or L2 ``g += wd*p``;
    ``m.lerp_``; ``v*b2 + (1-b2)*g*g``; ``denom = sqrt(v)/sqrt(bc2) + eps``;
    ``p -= lr/bc1 * m/denom``), so the result is bit for bit torch's on the CPU.
    Without bias correction both corrections are 1, as in the CPU kernel.]
    """
    param, exp_avg, exp_avg_sq = states
    beta1, beta2 = hyper.betas
    if grad_scale != 1.0:
        grad = grad * grad_scale
    if hyper.weight_decay != 0:
        if hyper.adamw_mode:
            param.mul_(1 - hyper.lr * hyper.weight_decay)
        else:
            grad = grad.add(param, alpha=hyper.weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    if hyper.bias_correction:
        # torch keeps the step as a float tensor and reads it back as a Python float
        bias_correction1 = 1 - beta1 ** float(step)
        bias_correction2 = 1 - beta2 ** float(step)
    else:
        bias_correction1 = bias_correction2 = 1.0
    step_size = hyper.lr / bias_correction1
    denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(hyper.eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)


class DeviceShardOptimizer(ShardOptimizer):
    """States on the compute device (fp32 master, ``exp_avg``, ``exp_avg_sq`` per shard),
    updated with torch tensor ops: the arithmetic of torch's single-tensor AdamW/Adam."""

    placement = "none"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._states: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def add(self, key: int, master: torch.Tensor, starts: Sequence[int] | None = None) -> None:
        # [Note: the moments are allocated with the master rather than at the first step:
        #  the same peak as torch's optimizer once training runs, and a checkpoint load
        #  can fill them before any step.]
        values = master.detach().reshape(-1).to(self.device, torch.float32, copy=True)
        self._states[key] = (values, torch.zeros_like(values), torch.zeros_like(values))

    def step(self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float) -> None:
        # [Note: each item's own states are updated, segment by segment with that
        #  segment's hyperparameters (Adam is elementwise), so a step costs O(len(items))
        #  however many shards exist: the engine steps one group at a time during backward.
        #  torch.optim would clear and loop over every master on each call.]
        for item in items:
            states = self._states[item.key]
            grad = item.open_grad().to(self.device).reshape(-1)
            n = states[0].numel()
            with torch.no_grad():
                for lo, hi, hp in split_by_hyper(item, hyper, 0, n):
                    _torch_adam(
                        tuple(t[lo:hi] for t in states),
                        grad[lo:hi],
                        hp,
                        step=item.step,
                        grad_scale=grad_scale,
                    )
            item.close_grad()
            _write_out(item, states[0])

    def state(self, key: int) -> dict[str, torch.Tensor]:
        return {
            k: t.detach().cpu().clone() for k, t in zip(STATE_KINDS, self._states[key], strict=True)
        }

    def drop(self, key: int) -> None:
        self._states.pop(key, None)

    def close(self) -> None:
        self._states.clear()


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

    def __init__(
        self, *, sub_group_size: int, pin_memory: bool = False, split_params: bool = False
    ) -> None:
        if sub_group_size <= 0:
            raise ValueError(f"sub_group_size must be positive, got {sub_group_size}")
        self.sub_group_size = int(sub_group_size)
        self.split_params = bool(split_params)
        self.pin = bool(pin_memory) and torch.cuda.is_available()
        self._states: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._groups: dict[int, list[tuple[int, int]]] = {}

    def add(self, key: int, master: torch.Tensor, starts: Sequence[int] | None = None) -> None:
        n = master.numel()
        self._groups[key] = sub_groups(n, self.sub_group_size, starts, split=self.split_params)
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
                for start, end in self._groups[item.key]:
                    for lo, hi, hp in split_by_hyper(item, hyper, start, end):
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
        self._groups.pop(key, None)

    def close(self) -> None:
        self._states.clear()
        self._groups.clear()
