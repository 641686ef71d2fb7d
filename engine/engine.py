"""The ZeRO engine: a module whose parameters, gradients and optimizer states are sharded.

Stages: 0 is plain data parallelism (every rank keeps everything, gradients
are all-reduced); 1 shards the optimizer states; 2 also the gradients
(reduce-scattered); 3 also the parameters (gathered per module by hooks).
Optimizer states live on the compute device, in host memory or on NVMe
(``offload_optimizer``); stage 3 parameter shards likewise (``offload_param``).

Two ways to drive it:

* DeepSpeed's: ``loss = engine(batch); engine.backward(loss); engine.step()``
  (``step`` honours ``gradient_accumulation_steps``, the loss scale, the LR
  schedule and zeroes the gradients after each optimizer step);
* plain PyTorch's: ``loss.backward(); optimizer.step(); optimizer.zero_grad()``
  on the returned optimizer, which steps on every call, like torch's, and leaves
  scheduling to the caller.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import nn

from tiermem import adam
from tiermem.engine.checkpointing import ActivationCheckpointing
from tiermem.engine.comm import Communicator
from tiermem.engine.config_base import ConfigError
from tiermem.engine.grads import BackwardPass, GradReducer
from tiermem.engine.hooks import ParamScheduler
from tiermem.engine.optimizer_step import AdamHyper, StepItem
from tiermem.engine.partition import FlatParamGroup, GroupState, plan_groups
from tiermem.engine.partitioner import Partitioner
from tiermem.engine.precision import make_scaler
from tiermem.engine.settings import EngineSettings, OptimizerSettings

__all__ = ["TiermemEngine", "ZeroOptimizer", "compute_device"]

logger = logging.getLogger("tiermem.engine")

CHECKPOINT_ISSUE = (
    "optimizer state dicts are not supported; use engine.save_checkpoint/load_checkpoint"
)


def compute_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0") or "0")
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


class ZeroOptimizer(torch.optim.Optimizer):
    """The optimizer ``initialize`` returns: torch's interface over the engine's sharded step.

    ``param_groups`` carry the hyperparameters (LR schedulers change ``lr``
    there); ``step()`` runs one sharded optimizer step on the gradients
    accumulated so far and ``zero_grad()`` clears them. When the user passed
    their own torch optimizer, its ``param_groups`` are shared, so a scheduler
    built on it steers this one.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        defaults: dict[str, Any],
        *,
        engine: TiermemEngine,
        shared_param_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(params, defaults)
        if shared_param_groups is not None:
            self.param_groups = shared_param_groups
        self._engine = engine

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimizer step over every rank's shard (torch semantics: no zeroing)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._engine._optimizer_step(zero_grads=False)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the accumulated gradients."""
        self._engine.zero_grad()

    def state_dict(self) -> dict[str, Any]:
        """Not supported: the states are sharded; use the engine's checkpoints."""
        raise NotImplementedError(CHECKPOINT_ISSUE)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Not supported: the states are sharded; use the engine's checkpoints."""
        raise NotImplementedError(CHECKPOINT_ISSUE)


def _hyper_from_client(client: torch.optim.Optimizer) -> OptimizerSettings:
    if not isinstance(client, (torch.optim.Adam, torch.optim.AdamW, adam.CPUAdam)):
        raise TypeError(
            "optimizer: tiermem runs Adam/AdamW itself; pass a torch.optim.Adam, "
            f"torch.optim.AdamW or tiermem.CPUAdam (got {type(client).__name__}), "
            'or configure "optimizer" in the config'
        )
    first = client.param_groups[0]
    if any(group.get("amsgrad") or group.get("maximize") for group in client.param_groups):
        raise ValueError("optimizer: amsgrad and maximize are not supported")
    adamw = isinstance(client, torch.optim.AdamW) or bool(first.get("decoupled_weight_decay"))
    return OptimizerSettings(
        type="AdamW" if adamw else "Adam",
        lr=float(first["lr"]),
        betas=(float(first["betas"][0]), float(first["betas"][1])),
        eps=float(first["eps"]),
        weight_decay=float(first["weight_decay"]),
        adamw_mode=adamw,
        bias_correction=bool(first.get("bias_correction", True)),
        state_dtype=str(first.get("state_dtype", "fp32")),
    )


def _fmt_scale(scale: float) -> str:
    return str(int(scale)) if float(scale).is_integer() else repr(scale)


def _sqnorm(t: torch.Tensor) -> float:
    if t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous():
        return adam.grad_sqnorm(t)
    return float(torch.linalg.vector_norm(t, dtype=torch.float64).item()) ** 2


class TiermemEngine:
    """Wraps ``module`` for ZeRO training; see the module docstring for the two ways to drive it."""

    def __init__(
        self,
        module: nn.Module,
        settings: EngineSettings,
        *,
        comm: Communicator | None = None,
        client_optimizer: torch.optim.Optimizer | None = None,
        lr_scheduler: Any = None,
        init_context: Any = None,
        model_parameters: Any = None,
    ) -> None:
        self.settings = settings
        self.comm = comm if comm is not None else Communicator()
        self.device = compute_device()
        self.precision = settings.precision
        self.dtype = settings.precision.dtype
        self.stage = settings.zero.stage
        self.module = module
        self.loss_scaler = make_scaler(settings.precision)
        self.global_steps = 0
        self.global_samples = 0
        self.micro_steps = 0
        self.skipped_steps = 0
        self._group_steps: dict[int, int] = {}
        self._updated_in_backward: set[int] = set()  # groups stepped as their gradients landed
        self._boundary_backwards = 0  # backward calls at this step's accumulation boundary
        self._one_backward_per_step = False  # the last optimizer step had exactly one
        self._grad_loss_scale = 1.0
        self._global_grad_norm: float | None = None
        self._hyper_settings = (
            _hyper_from_client(client_optimizer)
            if client_optimizer is not None
            else settings.optimizer
        )
        self.activation_checkpointing = ActivationCheckpointing(
            cpu_checkpointing=settings.cpu_checkpointing
        )
        try:
            self._build_groups(init_context)
            self._build_grad_path()
            self._build_optimizer(client_optimizer, model_parameters)
            self.lr_scheduler = self._build_lr_scheduler(lr_scheduler)
            self._predicted_in_backward: bool | None = None
            self._predict_order()  # until the stores record the real order
        except BaseException:
            # [Note: a failed start (a full swap disk) closes the stores it opened
            #  now, removing their scratch files, instead of whenever the engine
            #  is collected (the exception's traceback keeps it alive).]
            for store in getattr(getattr(self, "placements", None), "stores", ()):
                store.close()
            raise

    # -- construction ---------------------------------------------------------------------
    def _prepare_buffers(self) -> None:
        for mod in self.module.modules():
            for name, buf in mod._buffers.items():
                if buf is None:
                    continue
                dtype = self.dtype if buf.is_floating_point() else buf.dtype
                mod._buffers[name] = buf.to(device=self.device, dtype=dtype)

    def _build_groups(self, adopted: Any = None) -> None:
        """Group and shard the parameters (adopting the groups an init context built)."""
        if adopted is not None:
            partitioner, existing = adopted.handover(self.module)
        else:
            partitioner = Partitioner(
                self.settings, comm=self.comm, device=self.device, dtype=self.dtype
            )
            existing = []
        self._prepare_buffers()
        owner = {id(p): i for i, g in enumerate(existing) for p in g.params}
        plan = plan_groups(self.module, owner=owner, first_index=len(existing))
        layouts = [
            partitioner.layout(index, mod_name, members)
            for index, (mod_name, members) in enumerate(plan.members, start=len(existing))
        ]
        if partitioner.placements is None:
            partitioner.open(largest_shard=max((lay.shard_numel for lay in layouts), default=1))
        self.placements = partitioner.placements
        self.home = self.placements.home
        self.shard_optimizer = self.placements.shard_optimizer
        self.groups: list[FlatParamGroup] = list(existing)
        for layout, (_, members) in zip(layouts, plan.members, strict=True):
            self.groups.append(partitioner.partition(layout, [p for _, p in members]))
        self._module_uses = plan.module_uses
        self._known_params = {id(p) for g in self.groups for p in g.params}
        self._in_pass = False
        if self.placements.stores:
            self._pass_hook = self.module.register_forward_pre_hook(self._begin_pass)

    def _build_grad_path(self) -> None:
        """The gradient reducer and, at stage 3, the gather/release hooks."""
        zero = self.settings.zero
        self.backward_pass = BackwardPass()
        self.reducer = GradReducer(
            self.groups,
            comm=self.comm,
            backward_pass=self.backward_pass,
            shard_grads=self.stage >= 2,
            accumulators=self.placements.grad_accumulators,
            bucket_numel=zero.reduce_bucket_size,
            overlap=zero.overlap_comm,
        )
        self.param_scheduler: ParamScheduler | None = None
        if self.stage == 3:
            self.param_scheduler = ParamScheduler(
                self.module,
                self.groups,
                self._module_uses,
                backward_pass=self.backward_pass,
                prefetch_numel=zero.prefetch_bucket_size,
                max_live_numel=zero.max_live_parameters,
            )
            self.reducer.on_reduced = self.param_scheduler.on_reduced

    def _build_optimizer(self, client: torch.optim.Optimizer | None, model_parameters: Any) -> None:
        """The ZeroOptimizer: the client's param groups, else ``model_parameters``' dicts (their
        own hyperparameters over the config's), else one group of every trainable parameter."""
        hp = self._hyper_settings
        trainable = [p for g in self.groups if g.trainable for p in g.params]
        self._segments: dict[int, tuple[tuple[int, int, int], ...]] = {}
        self._left_out = False
        if hp is None:
            self.optimizer = None
            return
        if not trainable:
            raise ValueError("the model has no parameter that requires grad")
        defaults = dict(lr=hp.lr, betas=hp.betas, eps=hp.eps, weight_decay=hp.weight_decay)
        shared = client.param_groups if client is not None else None
        params: list[Any] = trainable
        if client is None and model_parameters is not None:
            # initialize refused a mix: all dicts (param groups) or all tensors
            dicts = [item for item in model_parameters if isinstance(item, dict)]
            if dicts:
                params = [
                    {**d, "params": [p for p in d["params"] if p.requires_grad]} for d in dicts
                ]
            else:
                params = [p for p in model_parameters if p.requires_grad]
            if not any(d["params"] for d in params) if dicts else not params:
                raise ValueError("model_parameters holds no parameter that requires grad")
        self.optimizer = ZeroOptimizer(params, defaults, engine=self, shared_param_groups=shared)
        stepped = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        self._left_out = any(id(p) not in stepped for p in trainable)
        if len(self.optimizer.param_groups) > 1 or self._left_out:
            self._segments = self._hyper_segments()

    def _hyper_segments(self) -> dict[int, tuple[tuple[int, int, int], ...]]:
        """Per trainable group: ``(lo, hi, param_group_index)`` ranges covering its shard.

        [Note: a module's parameters share one flat group, but a user's param
        groups may split them (weight decay on weights, none on biases), so the
        optimizer step runs each range of a shard with its own param group's
        hyperparameters. A parameter in no param group (``model_parameters`` or
        a client optimizer holding a subset, as DeepSpeed allows) gets index -1,
        which :meth:`_hyper` makes a step of lr 0 and no decay: its values stay
        exactly as they are. Padding follows the range before it.]
        """
        owner = {id(p): i for i, g in enumerate(self.optimizer.param_groups) for p in g["params"]}
        out = {}
        for group in self.groups:
            if not group.trainable:
                continue
            lay = group.layout
            pieces: list[list[int]] = []
            for slot, param in zip(lay.slots, group.params, strict=True):
                lo = max(slot.offset, lay.shard_start) - lay.shard_start
                hi = min(slot.offset + slot.numel, lay.shard_end) - lay.shard_start
                if lo >= hi:
                    continue
                index = owner.get(id(param), -1)
                if pieces and pieces[-1][2] == index:
                    pieces[-1][1] = hi
                else:
                    pieces.append([lo, hi, index])
            if not pieces:
                pieces = [[0, lay.shard_numel, 0]]
            pieces[0][0] = 0  # cover the padding: each range runs to where the next starts
            for before, after in zip(pieces, pieces[1:], strict=False):
                before[1] = after[0]
            pieces[-1][1] = lay.shard_numel
            out[group.index] = tuple((lo, hi, index) for lo, hi, index in pieces)
        return out

    def _build_lr_scheduler(self, lr_scheduler: Any) -> Any:
        if lr_scheduler is not None:
            if callable(lr_scheduler) and not hasattr(lr_scheduler, "step"):
                return lr_scheduler(self.optimizer)
            return lr_scheduler
        if self.settings.scheduler and self.optimizer is not None:
            from tiermem.engine.lr_schedules import build_lr_scheduler

            try:
                return build_lr_scheduler(self.optimizer, self.settings.scheduler)
            except ConfigError as err:
                if err.path is None or not err.path.startswith("scheduler.params."):
                    raise
                if '"auto"' not in err.detail:
                    raise
                raise ConfigError(
                    'is "auto", and tiermem.initialize does not know the length of the run: '
                    "write a number in the config, or pass lr_scheduler= to tiermem.initialize "
                    "(a scheduler, or a callable taking the optimizer, such as "
                    "lambda opt: tiermem.engine.lr_schedules.build_lr_scheduler(opt, "
                    'config["scheduler"], total_steps=..., warmup_steps=...))',
                    path=err.path,
                ) from None
        return None

    def _begin_pass(self, _module: nn.Module, _args: Any) -> None:
        # [Note: a store pass is one accumulation window plus its optimizer step, and
        #  passes start only once the stage 3 hooks have recorded the module order.
        #  The step that records it does not prefetch, so its store accesses come in
        #  another order than later steps'; recording the store's schedule on the
        #  next full window makes it match every later one (also after a resume).]
        if self._in_pass or self.micro_steps % self.gradient_accumulation_steps:
            return
        sched = self.param_scheduler
        if sched is None or (sched.forward_trace.recorded and sched.backward_trace.recorded):
            self._in_pass = True
            self.placements.begin_pass()

    def _end_pass(self) -> None:
        if self._in_pass:
            self._in_pass = False
            self.placements.end_pass()

    # -- the training loop ----------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run the wrapped module."""
        self._check_no_new_parameters()
        return self.module(*args, **kwargs)

    def _check_no_new_parameters(self) -> None:
        # [Note: a parameter added (or replaced) after initialize() belongs to no
        #  group: it would be neither gathered, reduced nor stepped. Refused loudly
        #  at the next forward or optimizer step rather than silently left untrained.
        #  The engine keeps every parameter it knows alive, so ids are not reused.]
        for name, param in self.module.named_parameters():
            if id(param) not in self._known_params:
                raise RuntimeError(
                    f"parameter {name!r} was added to the model after tiermem.initialize(); "
                    "the engine would neither shard nor train it: add every parameter "
                    "before initialize()"
                )

    def checkpoint(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``function`` with activation checkpointing as the config says (see
        :mod:`tiermem.engine.checkpointing`); call it from the model's forward."""
        return self.activation_checkpointing.checkpoint(function, *args, **kwargs)

    @property
    def gradient_accumulation_steps(self) -> int:
        """Micro-steps per optimizer step."""
        return self.settings.gradient_accumulation_steps

    def is_gradient_accumulation_boundary(self) -> bool:
        """Whether the next :meth:`step` runs the optimizer."""
        return (self.micro_steps + 1) % self.gradient_accumulation_steps == 0

    def backward(
        self, loss: torch.Tensor, *, retain_graph: bool = False, scale_wrt_gas: bool = True
    ) -> torch.Tensor:
        """Backward of ``loss`` times the loss scale, divided by the accumulation steps.

        ``scale_wrt_gas=False`` (DeepSpeed's name) skips the division, for a
        caller whose loss is already normalised over the accumulation window
        (the Hugging Face Trainer's).

        [Note: at an accumulation boundary, when the step needs no global
        gradient norm first (no clipping, no fp16 overflow check), each group is
        updated by the optimizer as soon as its reduced gradient lands, while
        backward goes on: the gradient is never written to its accumulator (on
        NVMe: no gradient traffic at all) and the state write-back overlaps the
        rest of backward. The state read does too where the store reads ahead
        along the backward order: by the order the engine predicts for it from
        the first step (Placements.predict), then by the recorded schedule.
        The reductions and the stage 1/2 all-gathers run inside backward then,
        so every rank must finish the same groups in the same order (a
        data-dependent graph, e.g. MoE routing, would mismatch collectives).
        Adam is per element and a group's gradient is final once every node
        that used its parameters has run, so the result is the one
        :meth:`step` would compute; :meth:`step` then updates the other
        groups.]

        [Note: several backward calls before one :meth:`step` accumulate, as
        in DeepSpeed. A gradient is final only after the last of them, so the
        update in backward runs only once the previous optimizer step had
        exactly one backward at its boundary (never on the first step): a loop
        that calls backward twice per step never overlaps, one that calls it
        once overlaps from its second step on. A loop that switches from one
        backward per step to several finds groups already updated by the
        first: refused, since the step could no longer be the one
        DeepSpeed takes.]
        """
        if self._updated_in_backward:
            raise RuntimeError(
                "engine.backward() called again before engine.step(), after steps with one "
                "backward each: the previous backward already updated parameters (the "
                "update-in-backward overlap, at an accumulation boundary without clipping). "
                "Call backward the same number of times before every step (several from the "
                "first step on accumulate), or call engine.step() after each backward"
            )
        if self.is_gradient_accumulation_boundary():
            self._boundary_backwards += 1
        scale = self.loss_scaler.scale
        factor = scale / self.gradient_accumulation_steps if scale_wrt_gas else scale
        self._grad_loss_scale = scale
        scaled = loss.float() * factor if factor != 1.0 else loss
        early = (
            self.optimizer is not None
            and not retain_graph
            and self._one_backward_per_step
            and self._boundary_backwards == 1
            and self.is_gradient_accumulation_boundary()
            and self._overlap_allowed()
        )
        self.reducer.on_landed = self._update_landed if early else None
        try:
            scaled.backward(retain_graph=retain_graph)
        finally:
            self.reducer.on_landed = None
        return loss

    def _update_landed(self, gi: int, grad: torch.Tensor) -> bool:
        """Step group ``gi`` now with its just-reduced owner gradient ``grad``."""
        self._group_steps[gi] = self._group_steps.get(gi, 0) + 1
        self._updated_in_backward.add(gi)
        hypers = [self._hyper(i) for i in range(len(self.optimizer.param_groups))]
        self.shard_optimizer.step(
            [self._step_item(gi, hypers, open_grad=lambda: grad, close_grad=lambda: None)],
            hypers[0],
            grad_scale=1.0 / self._grad_loss_scale,
        )
        return True

    def _step_item(
        self,
        gi: int,
        hypers: list[AdamHyper],
        *,
        open_grad: Callable[[], torch.Tensor],
        close_grad: Callable[[], None],
    ) -> StepItem:
        group = self.groups[gi]
        return StepItem(
            group.key,
            open_grad,
            close_grad,
            group.update_target,
            group.after_update,
            self._group_steps[gi],
            tuple(
                (lo, hi, hypers[i] if i >= 0 else self._hyper(-1))
                for lo, hi, i in self._segments.get(gi, ())
            ),
        )

    def step(self) -> None:
        """End a micro-step; at an accumulation boundary run the optimizer and the LR schedule."""
        boundary = self.is_gradient_accumulation_boundary()
        self.micro_steps += 1
        if not boundary:
            return
        stepped = self._optimizer_step(zero_grads=True)
        if stepped and self.lr_scheduler is not None:
            with warnings.catch_warnings():
                # a torch scheduler built on the user's optimizer counts that optimizer's
                # step() calls; the engine stepped instead, so its order warning is wrong
                warnings.filterwarnings(
                    "ignore", message=r"Detected call of `lr_scheduler.step\(\)`"
                )
                self.lr_scheduler.step()

    def zero_grad(self) -> None:
        """Clear the accumulated gradients (and any ``.grad`` left on the parameters)."""
        self.reducer.wait_all()
        self.reducer.zero()
        self._updated_in_backward.clear()
        self._grad_loss_scale = 1.0
        for group in self.groups:
            for param in group.params:
                param.grad = None

    def _hyper(self, param_group: int = 0) -> AdamHyper:
        if param_group < 0:  # a parameter no param group holds: left as it is
            return dataclasses.replace(self._hyper(0), lr=0.0, weight_decay=0.0)
        group = self.optimizer.param_groups[param_group]
        hp = self._hyper_settings
        return AdamHyper(
            lr=float(group["lr"]),
            betas=(float(group["betas"][0]), float(group["betas"][1])),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            adamw_mode=hp.adamw_mode,
            bias_correction=hp.bias_correction,
        )

    def _global_sqnorm(self, keys: Iterable[int]) -> float:
        """Squared norm of the gradients the optimizer steps (DeepSpeed's clipping norm
        leaves out parameters that no param group holds)."""
        total = 0.0
        for gi in keys:
            grad = self.reducer.open_owner_grad(gi)
            segments = self._segments.get(gi, ()) if self._left_out else ()
            if any(i < 0 for _, _, i in segments):
                total += sum(_sqnorm(grad[lo:hi]) for lo, hi, i in segments if i >= 0)
            else:
                total += _sqnorm(grad)
            self.reducer.close_owner_grad(gi)
        if self.stage > 0:
            total = self.comm.all_reduce_scalar(total)
        return total

    def _optimizer_step(self, *, zero_grads: bool) -> bool:
        """One sharded optimizer step; False when an fp16 overflow skipped it."""
        if self.optimizer is None:
            raise RuntimeError('no optimizer: pass one to initialize() or configure "optimizer"')
        self._check_no_new_parameters()
        if self.param_scheduler is not None:
            self.param_scheduler.free_unused()
        self.reducer.wait_all()
        keys = [gi for gi in self.reducer.stepped_groups() if gi not in self._updated_in_backward]
        inv_scale = 1.0 / self._grad_loss_scale
        clip = self.settings.gradient_clipping
        fp16 = self.precision.kind == "fp16"
        clip_coef = 1.0
        self._global_grad_norm = None
        if clip > 0 or fp16:
            norm = math.sqrt(self._global_sqnorm(keys)) * inv_scale
            self._global_grad_norm = norm
            if fp16 and not math.isfinite(norm):
                return self._skip_step(zero_grads)
            if clip > 0:
                clip_coef = min(1.0, clip / (norm + 1e-6))
        items = []
        hypers = [self._hyper(i) for i in range(len(self.optimizer.param_groups))]
        for gi in keys:
            self._group_steps[gi] = self._group_steps.get(gi, 0) + 1
            items.append(
                self._step_item(
                    gi,
                    hypers,
                    open_grad=partial(self.reducer.open_owner_grad, gi),
                    close_grad=partial(self.reducer.close_owner_grad, gi),
                )
            )
        self.shard_optimizer.step(items, hypers[0], grad_scale=inv_scale * clip_coef)
        self._updated_in_backward.clear()
        self._count_backwards()
        self.loss_scaler.update(False)
        self.global_steps += 1
        self.global_samples += self.settings.train_batch_size
        if zero_grads:
            self.zero_grad()
        self._end_pass()
        return True

    def _count_backwards(self) -> None:
        self._one_backward_per_step = self._boundary_backwards == 1
        self._boundary_backwards = 0
        self._predict_order()

    def _predict_order(self) -> None:
        """Give the stores the order the next step is expected to fetch in.

        [Note: whether a step updates each group in backward depends on the step
        before it (``_one_backward_per_step``, see backward), so the first step
        never does: it is predicted with the gradients read back by step(), and
        predicted again once that changes.]
        """
        in_backward = self._one_backward_per_step and self._overlap_allowed()
        if in_backward == self._predicted_in_backward:
            return
        self._predicted_in_backward = in_backward
        self.placements.predict(
            [(g.key, g.index, g.trainable) for g in self.groups],
            accumulation_steps=self.gradient_accumulation_steps,
            update_in_backward=in_backward,
        )

    def _overlap_allowed(self) -> bool:
        """Whether the config lets a step update groups as their gradients land."""
        return self.settings.gradient_clipping <= 0 and self.precision.kind != "fp16"

    def _skip_step(self, zero_grads: bool) -> bool:
        self._count_backwards()
        before = self.loss_scaler.scale
        self.loss_scaler.update(True)
        self.skipped_steps += 1
        self.global_steps += 1
        logger.warning(
            "fp16 gradient overflow at step %d: step skipped, loss scale %s -> %s",
            self.global_steps,
            _fmt_scale(before),
            _fmt_scale(self.loss_scaler.scale),
        )
        if zero_grads:
            self.zero_grad()
        self._end_pass()
        return False

    # -- everything else ------------------------------------------------------------------
    def train(self, mode: bool = True) -> TiermemEngine:
        """Put the module in training mode."""
        self.module.train(mode)
        return self

    def eval(self) -> TiermemEngine:
        """Put the module in evaluation mode."""
        self.module.eval()
        return self

    def get_lr(self) -> list[float]:
        """The current learning rate of each param group."""
        if self.optimizer is None:
            return []
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    def get_global_grad_norm(self) -> float | None:
        """The global gradient norm of the last optimizer step (when it was computed)."""
        return self._global_grad_norm

    @property
    def loss_scale(self) -> float:
        """The current loss scale (1 unless fp16)."""
        return self.loss_scaler.scale

    def master_state(self, group_index: int) -> dict[str, torch.Tensor]:
        """This rank's fp32 master/exp_avg/exp_avg_sq of one group's shard (host copies)."""
        return self.shard_optimizer.state(self.groups[group_index].key)

    def min_bytes_per_step(self) -> dict[str, int]:
        """The NVMe bytes (``read``, ``write``, ``total``) one optimizer step of this rank
        must move at least with this placement, driven by :meth:`backward` and :meth:`step`;
        see :mod:`tiermem.engine.io_minimum`. Compare with the stores' telemetry
        (``bytes_moved``) to see how far the store is from it."""
        from tiermem.engine.io_minimum import GroupTraffic, min_bytes_per_step

        return min_bytes_per_step(
            (
                GroupTraffic(g.layout.shard_numel, g.trainable, g.persistent)
                for g in self.groups
                if g.partitioned or g.trainable
            ),
            params_on_nvme=self.home is not None and self.home.placement == "nvme",
            optimizer_on_nvme=self.shard_optimizer.placement == "nvme",
            param_itemsize=self.dtype.itemsize,
            micro_steps=self.gradient_accumulation_steps,
            update_in_backward=self._overlap_allowed(),
        )

    @torch.no_grad()
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Every parameter, gathered, as CPU tensors in the compute dtype (collective)."""
        out: dict[str, torch.Tensor] = {}
        for group in self.groups:
            group.acquire()
            try:
                for slot, param in zip(group.layout.slots, group.params, strict=True):
                    out[slot.name] = param.detach().cpu().clone()
            finally:
                group.release()
        return out

    def save_checkpoint(
        self, save_dir: str | os.PathLike, tag: str | None = None, client_state: Any = None
    ) -> Any:
        """Save the training state (a collective); returns its directory. See
        :func:`tiermem.engine.checkpoint.save_checkpoint`."""
        from tiermem.engine.checkpoint import save_checkpoint

        return save_checkpoint(self, save_dir, tag=tag, client_state=client_state)

    def load_checkpoint(
        self, load_dir: str | os.PathLike, tag: str | None = None, *, verify: bool = True
    ) -> tuple[Any, Any]:
        """Restore a saved state; returns ``(path, client_state)``. See
        :func:`tiermem.engine.checkpoint.load_checkpoint`."""
        from tiermem.engine.checkpoint import load_checkpoint

        return load_checkpoint(self, load_dir, tag=tag, verify=verify)

    def load_weights(self, path: str | os.PathLike, *, strict: bool = True) -> Any:
        """Start from the weights in a safetensors/PyTorch file or Hugging Face folder (a
        collective, before training); returns the missing/unexpected names. See
        :func:`tiermem.engine.weights_import.load_weights`."""
        from tiermem.engine.weights_import import load_weights

        return load_weights(self, path, strict=strict)

    def close(self) -> None:
        """Remove the hooks, free the optimizer states and parameter shards, close the stores.

        [Note: this also breaks the engine's reference cycles (hooks, optimizer) so
        that its tensors are freed now, while the process group still exists. Left
        to the garbage collector at interpreter exit, tensors used in gloo
        collectives were seen to abort the process ("terminate called without an
        active exception") from gloo's worker threads.]
        """
        # [Note: a group prefetched for a module that never ran (an unused
        #  branch) still has its all-gather in flight; wait for it here, or gloo
        #  tears the work down at interpreter exit and aborts the process.]
        for group in self.groups:
            if group.state is GroupState.GATHERING:
                group.acquire()  # finishes the gather
                group.release()
        self.reducer.remove_hooks()
        if self.param_scheduler is not None:
            self.param_scheduler.remove_hooks()
        if self.placements.stores:
            self._pass_hook.remove()
        self.placements.close()
        if self.optimizer is not None:
            self.optimizer._engine = None
        self.reducer.on_reduced = None
        self.backward_pass = None
