"""Build a model partitioned as it is created: ``tiermem.init_context`` (``deepspeed.zero.Init``).

::

    with tiermem.init_context(config=cfg):
        model = MyModel()                      # never whole in memory
    engine, optimizer, _, _ = tiermem.initialize(model=model, config=cfg)

Inside the context every module's own parameters are partitioned (stage 3:
flat group, this rank's shard into the parameter tier, fp32 master into the
optimizer tier) once the module's parent has been registered in turn, so a
module's ``__init__`` may still initialise its direct children's parameters.
``Module.apply`` (what most ``_init_weights`` code uses), and the per-module
init methods named in ``module_inits`` (Hugging Face's, see
:mod:`tiermem.hf.model_init`), run with the module's own and its direct
children's parameters gathered in fp32 and store the new values after it: the
random numbers are drawn in the same order, on the same full tensors, as in an
eager build, so the weights are the same bit for bit. The root module's own
parameters and those of its direct children are partitioned by
:func:`tiermem.initialize`, which adopts the groups built here.

Code that changes already partitioned parameters outside ``apply`` must do
it inside :meth:`InitContext.gathered`; otherwise it sees empty tensors and
its changes are lost, as with DeepSpeed's ``zero.Init``.

[Note: :func:`initialize` finds the context through a registry keyed by
``id(parameter)`` (weak references to the parameters), not through attributes
on the parameters; a dict keyed by tensors would compare them elementwise.]
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module

from tiermem.engine.comm import Communicator, init_distributed_from_env
from tiermem.engine.partition import FlatParamGroup, ParamSlot
from tiermem.engine.partitioner import Partitioner
from tiermem.engine.rank_agreement import agreed_settings

__all__ = ["InitContext", "context_of", "init_targets"]

#: id(parameter) -> (weak reference to it, the context that partitioned it)
_REGISTRY: dict[int, tuple[weakref.ref, InitContext]] = {}


def init_targets(module: nn.Module) -> list[nn.Parameter]:
    """What a per-module init function may write: the module's own parameters and its
    direct children's (``_init_weights`` code such as T5's sets ``module.wi.weight``)."""
    params = list(module.parameters(recurse=False))
    for child in module.children():
        params.extend(child.parameters(recurse=False))
    return params


def context_of(model: nn.Module) -> InitContext | None:
    """The init context that partitioned some of ``model``'s parameters, if any."""
    for param in model.parameters():
        entry = _REGISTRY.get(id(param))
        if entry is not None and entry[0]() is param:
            return entry[1]
    return None


class InitContext:
    """Partitions parameters while a model is built; see the module docstring."""

    def __init__(self, config: Any, *, module_inits: Iterable[tuple[type, str]] = ()) -> None:
        """``module_inits``: ``(class, method name)`` or ``(class, method name, skip)``
        of per-module init methods called as ``method(owner, module, ...)`` (Hugging
        Face's ``PreTrainedModel._initialize_weights``); inside the context each runs
        with :func:`init_targets` of its ``module`` gathered, unless ``skip(module)``
        says the call will not touch them."""
        from tiermem.engine.engine import compute_device

        init_distributed_from_env()
        self.comm = Communicator()
        self.settings = agreed_settings(self.comm, config)
        if self.settings.zero.stage != 3:
            raise ValueError(
                "init_context partitions parameters, which needs zero_optimization.stage 3 "
                f"(the config says {self.settings.zero.stage})"
            )
        self.device = compute_device()
        self.partitioner = Partitioner(
            self.settings,
            comm=self.comm,
            device=self.device,
            dtype=self.settings.precision.dtype,
        )
        self.partitioner.open(
            largest_shard=-(-self.settings.zero.param_buffer_size // self.comm.world_size)
        )
        self.groups: list[FlatParamGroup] = []
        self._owner: dict[int, FlatParamGroup] = {}
        self._pending: list[weakref.ref] = []  # registered modules whose own params wait
        self._handle = None
        self._saved_apply = None
        self._module_inits = tuple(module_inits)
        for owner, name, *_ in self._module_inits:
            if not callable(owner.__dict__.get(name)):
                raise TypeError(f"module_inits: {owner.__name__} defines no method {name!r}")
        self._saved_inits: list[tuple[type, str, Any]] = []
        self._handed_over = False

    # -- the context ------------------------------------------------------------------------
    def __enter__(self) -> InitContext:
        if self._handed_over:
            raise RuntimeError("this init context was already handed to initialize()")
        self._handle = torch_module.register_module_module_registration_hook(self._registered)
        self._saved_apply = nn.Module.apply
        context = self

        def apply(module: nn.Module, fn):
            for child in module.children():
                child.apply(fn)
            with context.gathered(*init_targets(module)):
                fn(module)
            return module

        nn.Module.apply = apply
        self._saved_inits = []
        for owner, name, *skip in self._module_inits:
            original = owner.__dict__[name]
            self._saved_inits.append((owner, name, original))
            setattr(owner, name, self._gathering(original, skip[0] if skip else None))
        return self

    def _gathering(self, method: Any, skip: Any = None) -> Any:
        """``method(self_, module, ...)`` run with ``module``'s init targets gathered (not
        where ``skip(module)`` says the method will not touch them)."""
        context = self

        @functools.wraps(method)
        def run(owner: Any, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            if skip is not None and skip(module):
                return method(owner, module, *args, **kwargs)
            with context.gathered(*init_targets(module)):
                return method(owner, module, *args, **kwargs)

        return run

    def __exit__(self, *exc: Any) -> None:
        for owner, name, original in reversed(self._saved_inits):
            setattr(owner, name, original)
        self._saved_inits = []
        nn.Module.apply = self._saved_apply
        self._handle.remove()
        for ref in self._pending:
            module = ref()
            if module is not None:
                self._partition_own(module)
        self._pending.clear()

    def _registered(self, parent: nn.Module, name: str, child: nn.Module) -> None:
        # the child is built; its parent may still touch the child's own parameters,
        # but not the grandchildren's
        for module in child.modules():
            if module is not child:
                self._partition_own(module)
        self._pending.append(weakref.ref(child))
        return None

    # -- partitioning ---------------------------------------------------------------------
    def _partition_own(self, module: nn.Module) -> None:
        members = [
            (name, p)
            for name, p in module._parameters.items()
            if p is not None and id(p) not in self._owner and not p.is_meta
        ]
        if not members:
            return
        layout = self.partitioner.layout(len(self.groups), type(module).__name__, members)
        group = self.partitioner.partition(layout, [p for _, p in members])
        self.groups.append(group)
        for _, param in members:
            self._owner[id(param)] = group
            _REGISTRY[id(param)] = (weakref.ref(param, self._forget(id(param))), self)

    @staticmethod
    def _forget(key: int, registry: dict = _REGISTRY):
        return lambda _ref: registry.pop(key, None)

    @contextlib.contextmanager
    def gathered(
        self, *targets: nn.Module | nn.Parameter | Iterable, recurse: bool = True
    ) -> Iterator[None]:
        """Gather the partitioned parameters of ``targets`` (modules or parameters) for the
        block; whatever the block writes into them is partitioned again afterwards.

        [Note: the block sees fp32 values rebuilt from the fp32 master shards (the
        compute-dtype shard for frozen groups), not the compute-dtype copy: init code
        then writes fp32 values as it would into an eagerly built model, and the
        masters keep them unrounded under bf16/fp16, bit for bit what
        :func:`tiermem.initialize` would have made of the eager model.]
        """
        params: list[nn.Parameter] = []
        for target in targets:
            if isinstance(target, nn.Module):
                params.extend(target.parameters(recurse=recurse))
            elif isinstance(target, torch.Tensor):
                params.append(target)
            else:
                params.extend(target)
        groups: list[FlatParamGroup] = []
        for param in params:
            group = self._owner.get(id(param))
            if group is not None and group not in groups:
                groups.append(group)
        fulls = []
        try:
            with torch.no_grad():
                for group in groups:
                    full = self._full_fp32(group)
                    for slot, param in zip(group.layout.slots, group.params, strict=True):
                        param.data = full[slot.offset : slot.offset + slot.numel].view(slot.shape)
                    fulls.append(full)
                yield
        finally:
            with torch.no_grad():
                for group, full in zip(groups, fulls, strict=False):
                    self.partitioner.reinstall(group, full)
                for group in groups:
                    group.repoint()

    def _full_fp32(self, group: FlatParamGroup) -> torch.Tensor:
        """The group's whole padded flat values in fp32 on the compute device."""
        lay = group.layout
        if group.trainable:
            shard = self.partitioner.placements.shard_optimizer.state(group.key)["master"]
        else:
            shard = group.shard_values()
        full = torch.empty(lay.padded_numel, dtype=torch.float32, device=self.device)
        self.comm.all_gather_flat(full, shard.to(device=self.device, dtype=torch.float32))
        return full

    # -- hand-over to the engine -------------------------------------------------------------
    def check_compatible(self, settings: Any) -> None:
        """Refuse an engine config that would shard or place the parameters differently."""
        mine, theirs = self.settings, settings
        for what, a, b in (
            ("zero_optimization", mine.zero, theirs.zero),
            ("precision (fp16/bf16)", mine.precision.kind, theirs.precision.kind),
        ):
            if a != b:
                raise ValueError(
                    f"initialize() got a config whose {what} differs from the one the model "
                    "was built with in init_context(); pass the same config to both"
                )

    def _give_back(self, group: FlatParamGroup) -> None:
        """Put a group's values back into its parameters as plain tensors and drop the group.

        [Note: for groups whose parameters were frozen or unfrozen after they were
        built (``requires_grad`` set on the finished model, the usual way to
        freeze): the group's optimizer state no longer fits, and a module with
        both kinds needs two groups. The engine partitions these parameters
        afresh, from their compute-dtype values.]
        """
        group.acquire()
        values = [p.detach().clone() for p in group.params]
        group.release()
        self.partitioner.drop(group)
        with torch.no_grad():
            for param, value in zip(group.params, values, strict=True):
                param.data = value

    def handover(self, model: nn.Module) -> tuple[Partitioner, list[FlatParamGroup]]:
        """Give the groups that ``model`` uses to its engine, named after ``model``'s modules;
        groups of parameters the model no longer has are dropped."""
        if self._handed_over:
            raise RuntimeError("this init context was already handed to initialize()")
        self._handed_over = True
        names: dict[int, str] = {}
        module_of: dict[int, str] = {}
        for mod_name, mod in model.named_modules():
            for p_name, param in mod._parameters.items():
                if param is not None and id(param) not in names:
                    names[id(param)] = f"{mod_name}.{p_name}" if mod_name else p_name
                    module_of[id(param)] = mod_name
        kept: list[FlatParamGroup] = []
        for group in self.groups:
            ids = [id(p) for p in group.params]
            if not any(i in names for i in ids):
                self.partitioner.drop(group)
                continue
            if {p.requires_grad for p in group.params} != {group.trainable}:
                self._give_back(group)
                continue
            slots = tuple(
                ParamSlot(names.get(i, f"<unused>.{group.key}.{n}"), s.shape, s.numel, s.offset)
                for n, (i, s) in enumerate(zip(ids, group.layout.slots, strict=True))
            )
            owner_module = next(module_of[i] for i in ids if i in module_of)
            group.layout = group.layout.__class__(
                index=len(kept),
                module_name=owner_module,
                slots=slots,
                numel=group.layout.numel,
                num_shards=group.layout.num_shards,
                shard_rank=group.layout.shard_rank,
                key=group.key,
            )
            kept.append(group)
        for param_id in list(self._owner):
            _REGISTRY.pop(param_id, None)
        self._owner.clear()
        self.groups = []
        return self.partitioner, kept
