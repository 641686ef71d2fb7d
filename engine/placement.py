"""Choose where parameter shards and optimizer states live, from ``zero_optimization``.

``offload_param.device`` picks the stage 3 :class:`~tiermem.engine.param_home.ParamHome`
(device, host, NVMe) and ``offload_optimizer.device`` the
:class:`~tiermem.engine.optimizer_step.ShardOptimizer` (device, host, NVMe).
NVMe placements share one :class:`~tiermem.store.TensorStore` when their
``nvme_path`` lists are the same, else each gets its own.

[Note: the store's host budget is sized from the ZeRO buffer counts as
DeepSpeed uses them: ``offload_param.buffer_count`` largest parameter
shards plus ``offload_optimizer.buffer_count`` optimizer sub-groups
(``[master | m | v]``, 12 bytes per element) and two fp32 gradient
accumulators, plus twice the prefetch window. The store evicts (writing
dirty copies home first) whatever does not fit.]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tiermem.adam import QUANT_BLOCK
from tiermem.engine.config_base import ConfigError
from tiermem.engine.grad_accum import (
    GradAccumulators,
    MemoryGradAccumulators,
    StoreGradAccumulators,
)
from tiermem.engine.optimizer_step import DeviceShardOptimizer, HostShardOptimizer, ShardOptimizer
from tiermem.engine.param_home import DeviceParamHome, HostParamHome, ParamHome
from tiermem.engine.settings import EngineSettings

__all__ = ["Placements", "build_placements"]


@dataclass
class Placements:
    """The parameter home (stage 3 only), the optimizer tier and any stores they use."""

    home: ParamHome | None
    shard_optimizer: ShardOptimizer
    grad_accumulators: GradAccumulators
    stores: list = field(default_factory=list)

    def begin_pass(self) -> None:
        """A training step starts (the stores replay their recorded schedule)."""
        for store in self.stores:
            store.begin_pass()

    def end_pass(self) -> None:
        """A training step ended."""
        for store in self.stores:
            store.end_pass()

    def predict(
        self,
        groups: list[tuple[int, int, bool]],
        *,
        accumulation_steps: int,
        update_in_backward: bool,
    ) -> None:
        """Tell the stores the order a step is expected to fetch in, so the
        steps before their recording prefetch too. ``groups``: ``(key, index,
        trainable)`` in module registration order (see
        :func:`~tiermem.engine.nvme_tiers.predict_fetch_order`)."""
        if not self.stores:
            return
        from tiermem.engine.nvme_tiers import predict_fetch_order

        accumulators = self.grad_accumulators
        predict_fetch_order(
            self.stores,
            home=self.home,
            optimizer=self.shard_optimizer,
            grad_store=getattr(accumulators, "store", None)
            if isinstance(accumulators, StoreGradAccumulators)
            else None,
            groups=groups,
            accumulation_steps=accumulation_steps,
            update_in_backward=update_in_backward,
        )

    def close(self) -> None:
        """Free states and shards and close the stores (removing their scratch files)."""
        self.shard_optimizer.close()
        self.grad_accumulators.close_all()
        if self.home is not None:
            self.home.close()
        for store in self.stores:
            store.close()
        self.stores.clear()


def _compact_optimizer(
    settings: EngineSettings, state_dtype: str, opt_where: str, device: torch.device, store_for
) -> ShardOptimizer:
    """The shard optimizer for bf16 / int8 moments (tiermem.engine.compact_states)."""
    from tiermem.engine.compact_states import CompactHostShardOptimizer, CompactNvmeShardOptimizer

    zero = settings.zero
    if opt_where == "none" and device.type != "cpu":
        raise ConfigError(
            f'"{state_dtype}" optimizer states need the CPU optimizer: set '
            'zero_optimization.offload_optimizer.device to "cpu" or "nvme"',
            path="optimizer.params.state_dtype",
        )
    if opt_where == "nvme":
        return CompactNvmeShardOptimizer(
            store_for(zero.optimizer_nvme_path, "zero_optimization.offload_optimizer.nvme_path"),
            sub_group_size=zero.sub_group_size,
            state_dtype=state_dtype,
            quant_block=QUANT_BLOCK,
            split_params=zero.sub_group_split_params,
        )
    return CompactHostShardOptimizer(
        sub_group_size=zero.sub_group_size,
        state_dtype=state_dtype,
        quant_block=QUANT_BLOCK,
        pin_memory=zero.pin_memory and opt_where == "cpu",
        split_params=zero.sub_group_split_params,
    )


def _round_up(n: int, multiple: int = 4096) -> int:
    return -(-n // multiple) * multiple


def build_placements(
    settings: EngineSettings,
    *,
    device: torch.device,
    rank: int,
    dtype: torch.dtype,
    largest_shard: int,
    num_shards: int = 1,
) -> Placements:
    """The placements ``settings`` asks for, for shards of at most ``largest_shard`` elements."""
    zero = settings.zero
    param_where = zero.offload_param if zero.stage == 3 else "none"
    opt_where = zero.offload_optimizer
    largest_shard = max(1, int(largest_shard))
    elem = torch.empty((), dtype=dtype).element_size()
    param_bytes = _round_up(largest_shard * elem)
    # [Note: without sub_group_split_params a sub-group holds whole parameters, so a
    #  parameter larger than sub_group_size makes one as large as its shard.]
    largest_sub_group = zero.sub_group_size if zero.sub_group_split_params else largest_shard
    sub_group = min(largest_sub_group, largest_shard)
    chunk_bytes = _round_up(sub_group * 12)
    if settings.optimizer is not None and settings.optimizer.state_dtype != "fp32":
        from tiermem.engine.compact_states import PackedLayout

        layout = PackedLayout(sub_group, settings.optimizer.state_dtype, QUANT_BLOCK)
        chunk_bytes = _round_up(layout.nbytes)
    stores: dict[tuple[str, ...], object] = {}
    lend_bytes = 0
    if param_where == "nvme" and device.type == "cpu" and num_shards == 1:
        # [Note: groups gathered on one rank whose compute device is the CPU
        #  compute on the store's buffers (StoreParamHome.lend): room for
        #  offload_param.buffer_count of them, as DeepSpeed's parameter swap
        #  buffers hold the gathered parameters; past that a group copies.]
        lend_bytes = zero.param_buffer_count * param_bytes

    def store_for(paths: tuple[str, ...], key: str):
        from tiermem.engine.nvme_tiers import StoreSpec, open_store, rank_paths

        if not paths:
            raise ValueError("zero_optimization: an nvme offload needs nvme_path")
        if paths not in stores:
            prefetch = 2 * max(param_bytes if param_where == "nvme" else 0, chunk_bytes)
            host = 2 * prefetch
            if param_where == "nvme":  # the buffers, plus one shard open for its update
                host += (zero.param_buffer_count + 1) * param_bytes + lend_bytes
            if opt_where == "nvme":  # at least the sub-group updated and the one read ahead,
                host += (max(zero.optimizer_buffer_count, 2) + 1) * chunk_bytes
                host += 2 * _round_up(largest_shard * 4)  # and two gradient accumulators
            spec = StoreSpec(
                paths=rank_paths(paths, rank, key=key),
                host_bytes=host,
                prefetch_bytes=prefetch,
                pin_memory=zero.pin_memory and device.type == "cuda",
                aio=settings.aio,
                key=key,
            )
            stores[paths] = open_store(spec)
        return stores[paths]

    home: ParamHome | None = None
    if zero.stage == 3:
        if param_where == "none":
            home = DeviceParamHome(device)
        elif param_where == "cpu":
            home = HostParamHome(device, pin_memory=zero.pin_memory)
        else:
            from tiermem.engine.nvme_tiers import StoreParamHome

            home = StoreParamHome(
                store_for(zero.param_nvme_path, "zero_optimization.offload_param.nvme_path"),
                device,
                lend_bytes=lend_bytes,
            )
    state_dtype = settings.optimizer.state_dtype if settings.optimizer is not None else "fp32"
    if state_dtype != "fp32":
        shard_optimizer: ShardOptimizer = _compact_optimizer(
            settings, state_dtype, opt_where, device, store_for
        )
    elif opt_where == "none" and device.type != "cpu":
        shard_optimizer = DeviceShardOptimizer(device)
    elif opt_where == "none":
        # [Note: on a CPU-only machine the compute device *is* host memory, so
        #  "no offload" keeps the states where "cpu" offload keeps them, and the
        #  fused SIMD kernel updates them: torch's per-parameter AdamW made 9
        #  passes over memory per step (1.5 s of a 3.8 s step on the bench GPT).
        #  The trajectory then matches plain torch within the CPU kernel's
        #  tolerance rather than bit for bit.]
        shard_optimizer = HostShardOptimizer(
            sub_group_size=zero.sub_group_size,
            pin_memory=False,
            split_params=zero.sub_group_split_params,
        )
    elif opt_where == "cpu":
        shard_optimizer = HostShardOptimizer(
            sub_group_size=zero.sub_group_size,
            pin_memory=zero.pin_memory,
            split_params=zero.sub_group_split_params,
        )
    else:
        from tiermem.engine.nvme_tiers import NvmeShardOptimizer

        shard_optimizer = NvmeShardOptimizer(
            store_for(zero.optimizer_nvme_path, "zero_optimization.offload_optimizer.nvme_path"),
            sub_group_size=zero.sub_group_size,
            split_params=zero.sub_group_split_params,
        )
    if opt_where == "nvme":
        grads: GradAccumulators = StoreGradAccumulators(
            store_for(zero.optimizer_nvme_path, "zero_optimization.offload_optimizer.nvme_path")
        )
    else:
        grads = MemoryGradAccumulators(device if opt_where == "none" else torch.device("cpu"))
    return Placements(
        home=home,
        shard_optimizer=shard_optimizer,
        grad_accumulators=grads,
        stores=list(stores.values()),
    )
