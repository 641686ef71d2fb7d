"""NVMe placements through the tiered store: parameter shards and optimizer states.

Everything on NVMe goes through :class:`tiermem.store.TensorStore`; the
engine never touches files or io_uring. One store serves both placements when
they share their ``nvme_path`` so that its access schedule (recorded on the
first training step, replayed as prefetches on later ones) covers the whole
step: parameter fetches in forward and backward, then the optimizer's
sub-groups.

* :class:`StoreParamHome`: each group's compute-dtype parameter shard is a
  store tensor homed on NVMe; a gather fetches it into host memory, copies it
  out and releases it; an update fetches it, lets the CPU Adam write the new
  values into it, and releases it dirty.
* :class:`NvmeShardOptimizer`: each sub-group (whole parameters of one shard,
  at most ``sub_group_size`` elements unless one parameter alone is larger; see
  :func:`~tiermem.engine.optimizer_step.sub_groups`) is one store tensor
  ``[master | exp_avg | exp_avg_sq]`` in fp32. The step runs down the
  sub-groups fetching the next one before updating the current and releasing
  it dirty, so the read of sub-group ``i + 1``, the update of ``i`` and the
  write-back of ``i - 1`` overlap.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from tiermem.engine.config_base import ConfigError
from tiermem.engine.flat_buffers import CAN_COUNT_USERS, storage_users
from tiermem.engine.optimizer_step import (
    STATE_KINDS,
    AdamHyper,
    ShardOptimizer,
    StepItem,
    _host_grad,
    _HostTarget,
    _kernel,
    split_by_hyper,
    sub_groups,
)
from tiermem.engine.param_home import ParamHome
from tiermem.store import FetchHandle, StoreConfig, TensorStore, TierKind

__all__ = [
    "NvmeShardOptimizer",
    "StoreParamHome",
    "StoreSpec",
    "open_store",
    "predict_fetch_order",
    "rank_paths",
]


@dataclass(frozen=True, kw_only=True)
class StoreSpec:
    """How to open the engine's store."""

    paths: tuple[str, ...]
    host_bytes: int
    prefetch_bytes: int
    pin_memory: bool = False
    aio: object = None
    key: str = "nvme_path"  # the config key the paths came from, for errors


def rank_paths(paths: Sequence[str], rank: int, *, key: str = "nvme_path") -> tuple[str, ...]:
    """One subdirectory per rank under each configured ``nvme_path``.

    The store creates the missing directories (mode 0700). A path that cannot
    become one is a :class:`ConfigError` naming the config ``key`` and the path.
    """
    if not paths:
        raise ValueError("nvme offload needs nvme_path")
    out = []
    for path in paths:
        sub = Path(path) / f"tiermem_rank{rank}"
        _check_usable_dir(sub, given=path, key=key)
        out.append(os.fspath(sub))
    return tuple(out)


def _check_usable_dir(target: Path, *, given: str, key: str) -> None:
    """Raise ConfigError unless ``target`` is, or can be created as, a writable directory.

    [Note: ``os.access`` asks the kernel, so it sees read-only mounts also for
    root (who passes permission bits anyway: a 0500 directory is writable for
    root, and then really is). Done here, before any file exists, so the error
    names the config key instead of surfacing as an OSError from deep in the store.]
    """
    probe = target
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    where = f"{given}" if probe in (target, target.parent) else f"{given} ({probe})"
    if probe.is_symlink() and not probe.exists():
        raise ConfigError(
            f"{where} is a symlink to {os.readlink(probe)}, which does not exist", path=key
        )
    if not probe.is_dir():
        raise ConfigError(f"{where} exists and is not a directory", path=key)
    if not os.access(probe, os.W_OK | os.X_OK):
        ro = os.statvfs(probe).f_flag & os.ST_RDONLY
        why = "is on a read-only filesystem" if ro else "is not writable by this user"
        raise ConfigError(f"{where} {why}", path=key)


def open_store(spec: StoreSpec) -> TensorStore:
    """A scratch store (files removed at close) with the given budget and places."""
    kwargs = {}
    if spec.aio is not None:
        kwargs["aio"] = spec.aio
    cfg = StoreConfig(
        host_bytes=int(spec.host_bytes),
        nvme_paths=spec.paths,
        prefetch_bytes=int(spec.prefetch_bytes),
        pin_memory=bool(spec.pin_memory),
        **kwargs,
    )
    try:
        return TensorStore(cfg)
    except OSError as exc:
        # [Note: a directory the checks above let through can still fail to be
        #  made (under /proc, a vanished parent): named by its config key too.]
        bad = exc.filename and _is_or_holds(os.fspath(exc.filename), spec.paths)
        if not bad:
            raise
        raise ConfigError(
            f"{exc.filename}: cannot be created or used as a swap directory "
            f"({exc.strerror or exc})",
            path=spec.key,
        ) from exc


def _is_or_holds(name: str, paths: Sequence[str]) -> bool:
    """Whether ``name`` is one of ``paths`` or a directory above one (made for it)."""
    name = os.path.abspath(name)
    return any(os.path.commonpath([name, os.path.abspath(p)]) == name for p in paths)


@dataclass(kw_only=True)
class _Loan:
    """A store copy lent as a group's gathered buffer (fetched until released)."""

    shard: torch.Tensor
    nbytes: int
    users: int | None  # storage_users(shard) when lent: the home's and the store's
    out: bool = True  # False: given back, kept while saved views still read it
    refs: int = 1  # fetches held: one per lend since the copy was last released


class StoreParamHome(ParamHome):
    """Parameter shards homed on NVMe in the store (``offload_param.device: nvme``)."""

    placement = "nvme"
    stable = False

    def __init__(self, store: TensorStore, device: torch.device, *, lend_bytes: int = 0) -> None:
        """``lend_bytes``: the most shard bytes lent out at once as gathered buffers."""
        self.store = store
        self.device = device
        self.lend_bytes = int(lend_bytes)
        self._numel: dict[int, int] = {}
        self._nbytes: dict[int, int] = {}
        self._loans: dict[int, _Loan] = {}

    @staticmethod
    def _name(key: int) -> str:
        return f"param.{key}"

    def put(self, key: int, shard: torch.Tensor) -> None:
        flat = shard.detach().reshape(-1).cpu()
        self.store.register(self._name(key), flat.numel(), flat.dtype, init=flat)
        self._numel[key] = flat.numel()
        self._nbytes[key] = flat.nbytes

    def load(self, key: int) -> torch.Tensor:
        host = self.store.fetch(self._name(key), TierKind.HOST).wait()
        if self.device.type == "cpu":
            return host
        dev = host.to(self.device, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()  # before the host copy may go
        return dev

    def unload(self, key: int) -> None:
        self.store.release(self._name(key))

    def lend(self, key: int) -> torch.Tensor | None:
        """The store's host copy itself, when the compute device is the CPU.

        [Note: a one-shard group (world size 1) then computes on the store's
        buffer: no copy into a fresh flat buffer, whose page faults cost more
        than the copy (3.9 against 21 GB/s here). The copy stays fetched while
        lent, so it counts against the host tier, which build_placements sized
        with ``lend_bytes`` of room for it; past that the group copies. A copy
        given back stays fetched while anything else refers to it (views that
        autograd saved for backward, see tiermem.engine.flat_buffers): the
        store must not evict and reuse it under them. Such a copy is lent
        again as it is when its group is gathered again.]
        """
        self._sweep()
        if self.device.type != "cpu" or not CAN_COUNT_USERS:
            return None  # (without a count of its users a copy could not be handed back safely)
        loan = self._loans.get(key)
        if loan is not None and loan.out:
            return None  # lent already: a second borrower copies
        nbytes = self._nbytes[key]
        if loan is None and sum(o.nbytes for o in self._loans.values()) + nbytes > self.lend_bytes:
            return None
        # [Note: one fetch per lend, also of a copy still held from an earlier
        #  one, so that every pass makes the same fetches as the recorded one.]
        shard = self.load(key)
        if loan is None:
            self._loans[key] = _Loan(shard=shard, nbytes=nbytes, users=storage_users(shard))
        else:
            loan.out, loan.refs = True, loan.refs + 1
        return shard

    def give_back(self, key: int) -> None:
        self._loans[key].out = False
        self._sweep()

    def _sweep(self) -> None:
        """Release the copies given back that nothing else refers to any more."""
        for key, loan in list(self._loans.items()):
            if loan.out:
                continue
            users = storage_users(loan.shard)
            if loan.users is not None and users is not None and users <= loan.users:
                del self._loans[key]
                for _ in range(loan.refs):
                    self.unload(key)

    def open_for_update(self, key: int) -> torch.Tensor:
        return self.store.fetch(self._name(key), TierKind.HOST).wait()

    def close_update(self, key: int) -> None:
        self.store.release(self._name(key), dirty=True)

    def numel(self, key: int) -> int:
        return self._numel[key]

    def drop(self, key: int) -> None:
        loan = self._loans.pop(key, None)
        for _ in range(loan.refs if loan is not None else 0):
            self.unload(key)
        self._nbytes.pop(key, None)
        if self._numel.pop(key, None) is not None:
            self.store.drop(self._name(key))

    def close(self) -> None:
        self._loans.clear()  # the store closes with the engine's placements


class NvmeShardOptimizer(ShardOptimizer):
    """Adam states on NVMe, updated one sub-group at a time, pipelined through the store."""

    placement = "nvme"

    def __init__(
        self, store: TensorStore, *, sub_group_size: int, split_params: bool = False
    ) -> None:
        if sub_group_size <= 0:
            raise ValueError(f"sub_group_size must be positive, got {sub_group_size}")
        self.store = store
        self.sub_group_size = int(sub_group_size)
        self.split_params = bool(split_params)
        self._chunks: dict[int, list[tuple[int, int]]] = {}
        self._chunk_index: dict[int, dict[tuple[int, int], int]] = {}

    @staticmethod
    def _name(key: int, index: int) -> str:
        return f"adam.{key}.{index}"

    def add(self, key: int, master: torch.Tensor, starts: Sequence[int] | None = None) -> None:
        flat = master.detach().reshape(-1).to("cpu", torch.float32)
        chunks = []
        bounds = sub_groups(flat.numel(), self.sub_group_size, starts, split=self.split_params)
        for index, (lo, hi) in enumerate(bounds):
            packed = torch.zeros(3 * (hi - lo), dtype=torch.float32)
            packed[: hi - lo].copy_(flat[lo:hi])
            self.store.register(self._name(key, index), packed.numel(), torch.float32, init=packed)
            chunks.append((lo, hi))
        self._chunks[key] = chunks
        self._chunk_index[key] = {c: i for i, c in enumerate(chunks)}

    def chunk_index(self, key: int, lo: int, hi: int) -> int | None:
        """The index of sub-group ``[lo, hi)`` of shard ``key``; None if it is not one."""
        return self._chunk_index.get(key, {}).get((lo, hi))

    def step(self, items: Sequence[StepItem], hyper: AdamHyper, *, grad_scale: float) -> None:
        plan = [
            (item, index, lo, hi)
            for item in items
            for index, (lo, hi) in enumerate(self._chunks[item.key])
        ]
        if not plan:
            return
        grads = {}
        pending: FetchHandle = self.store.fetch(self._name(plan[0][0].key, 0), TierKind.HOST)
        target: _HostTarget | None = None
        out: torch.Tensor | None = None
        for pos, (item, index, lo, hi) in enumerate(plan):
            current = pending
            if pos + 1 < len(plan):  # read the next sub-group while this one updates
                nxt = plan[pos + 1]
                pending = self.store.fetch(self._name(nxt[0].key, nxt[1]), TierKind.HOST)
            if index == 0:
                target = _HostTarget(item)
                out = target.__enter__()
                grads[item.key] = _host_grad(item.open_grad())
            packed = current.wait()
            n = hi - lo
            master, m, v = packed[:n], packed[n : 2 * n], packed[2 * n :]
            for a, b, hp in split_by_hyper(item, hyper, lo, hi):
                _kernel(
                    (master[a - lo : b - lo], m[a - lo : b - lo], v[a - lo : b - lo]),
                    grads[item.key][a:b],
                    out[a:b],
                    hp,
                    step=item.step,
                    grad_scale=grad_scale,
                )
            self.store.release(self._name(item.key, index), dirty=True)  # written back async
            if index == len(self._chunks[item.key]) - 1:
                target.__exit__(None, None, None)
                grads.pop(item.key)
                item.close_grad()

    def fetch_order(self, keys: Sequence[int], *, param_name, grad_name) -> list[str]:
        """The store tensors :meth:`step` fetches for groups ``keys``, in order.

        ``param_name(key)`` / ``grad_name(key)``: the parameter shard opened for
        the update and the gradient (None where they are not in this store).
        """
        plan = [(key, index) for key in keys for index in range(len(self._chunks.get(key, ())))]
        if not plan:
            return []
        out = [self._name(*plan[0])]
        for pos, (key, index) in enumerate(plan):
            if pos + 1 < len(plan):
                out.append(self._name(*plan[pos + 1]))
            if index == 0:
                out += [n for n in (param_name(key), grad_name(key)) if n is not None]
        return out

    def drop(self, key: int) -> None:
        self._chunk_index.pop(key, None)
        for index in range(len(self._chunks.pop(key, []))):
            self.store.drop(self._name(key, index))

    def state(self, key: int) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {kind: [] for kind in STATE_KINDS}
        for index, (lo, hi) in enumerate(self._chunks[key]):
            packed = self.store.fetch(self._name(key, index), TierKind.HOST).wait()
            n = hi - lo
            parts["master"].append(packed[:n].clone())
            parts["exp_avg"].append(packed[n : 2 * n].clone())
            parts["exp_avg_sq"].append(packed[2 * n :].clone())
            self.store.release(self._name(key, index))
        return {k: torch.cat(v) for k, v in parts.items()}

    def close(self) -> None:
        self._chunks.clear()
        self._chunk_index.clear()


def predict_fetch_order(
    stores: Sequence[TensorStore],
    *,
    home: ParamHome | None,
    optimizer: ShardOptimizer,
    grad_store: TensorStore | None,
    groups: Sequence[tuple[int, int, bool]],
    accumulation_steps: int,
    update_in_backward: bool,
) -> None:
    """Give each store the order a training step is expected to fetch in.

    ``groups``: ``(key, index, trainable)`` in module registration order;
    ``grad_store``: the store of the gradient accumulators (``grad.{index}``),
    if any; ``update_in_backward``: whether the last backward of the step
    updates each group as its gradient lands (else :meth:`step` updates all
    of them, reading every gradient once more for the norm first).

    [Note: the guess is the forward in registration order, the backward in
    its reverse (each group's shard gathered again, then its gradient landed
    or its update run), per micro-step, then the norm's pass over the
    gradients and the optimizer's sub-groups as :meth:`NvmeShardOptimizer.step`
    walks them. It stands in for the store's recording on the steps before one
    exists (the engine records from the second step, after the hooks have
    learnt the module order); fetches it did not foresee (a tied weight
    gathered twice) only cost the prefetches around them.]
    """
    param_store = home.store if isinstance(home, StoreParamHome) else None
    by_index = {key: index for key, index, _ in groups}
    store_of: dict[str, TensorStore | None] = {}

    def param(key: int) -> str | None:
        name = StoreParamHome._name(key) if param_store is not None else None
        store_of[name] = param_store
        return name

    def grad(key: int) -> str | None:
        name = f"grad.{by_index[key]}" if grad_store is not None else None
        store_of[name] = grad_store
        return name

    def update(keys: list[int], *, with_grad: bool) -> list[str | None]:
        grad_of = grad if with_grad else (lambda key: None)
        if isinstance(optimizer, NvmeShardOptimizer):
            return optimizer.fetch_order(keys, param_name=param, grad_name=grad_of)
        return [n for key in keys for n in (param(key), grad_of(key))]

    def micro_step(*, last: bool) -> list[str | None]:
        out = [param(key) for key, _, _ in groups]
        for key, _, trainable in reversed(groups):
            out.append(param(key))
            if trainable:
                early = last and update_in_backward
                out += update([key], with_grad=False) if early else [grad(key)]
        return out

    trained = [key for key, _, trainable in groups if trainable]
    named: list[str | None] = []
    for micro in range(accumulation_steps):
        named += micro_step(last=micro == accumulation_steps - 1)
    if not update_in_backward:
        named += [grad(key) for key in trained]
        named += update(trained, with_grad=True)
    for store in stores:
        own = optimizer.store if isinstance(optimizer, NvmeShardOptimizer) else None
        store.predict(
            [(n, TierKind.HOST) for n in named if n is not None and store_of.get(n, own) is store]
        )
