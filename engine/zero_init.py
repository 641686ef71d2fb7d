"""Build a model partitioned as it is created: ``tiermem.init_context`` (``deepspeed.zero.Init``).

::

    with tiermem.init_context(config=cfg):
        model = MyModel()                      # never whole in memory
    engine, optimizer, _, _ = tiermem.initialize(model=model, config=cfg)

Inside the context every module's own parameters are partitioned (stage 3:
flat group, this rank's shard into the parameter tier, fp32 master into the
optimizer tier) once the module's parent has been registered in turn, so a
module's ``__init__`` may still initialise its direct children's parameters.
``Module.apply`` (what Hugging Face's ``post_init`` and most ``_init_weights``
code use) gathers each module's parameters around the function and stores
the new values after it. The root module's own parameters and those of its
direct children are partitioned by :func:`tiermem.initialize`, which adopts
the groups built here.

Code that changes already partitioned parameters outside ``apply`` must do
it inside :meth:`InitContext.gathered`; otherwise it sees empty tensors and
its changes are lost, as with DeepSpeed's ``zero.Init``.

[Note: :func:`initialize` finds the context through a registry keyed by
``id(parameter)`` (weak references to the parameters), not through attributes
on the parameters; a dict keyed by tensors would compare them elementwise.]
"""

from __future__ import annotations

import contextlib
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

__all__ = ["InitContext", "context_of"]

#: id(parameter) -> (weak reference to it, the context that partitioned it)
_REGISTRY: dict[int, tuple[weakref.ref, InitContext]] = {}


def context_of(model: nn.Module) -> InitContext | None:
    """The init context that partitioned some of ``model``'s parameters, if any."""
    for param in model.parameters():
        entry = _REGISTRY.get(id(param))
        if entry is not None and entry[0]() is param:
            return entry[1]
    return None


class InitContext:
    """Partitions parameters while a model is built; see the module docstring."""

    def __init__(self, config: Any) -> None:
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
            with context.gathered(module, recurse=False):
                fn(module)
            return module

        nn.Module.apply = apply
        return self

    def __exit__(self, *exc: Any) -> None:
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
        block; whatever the block writes into them is partitioned again afterwards."""
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
        for group in groups:
            group.acquire()
        try:
            with torch.no_grad():
                yield
        finally:
            with torch.no_grad():
                for group in groups:
                    self.partitioner.reinstall(group, group.flatten_fp32())
                    group.release()

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
