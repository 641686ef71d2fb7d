"""One rank on the CPU with parameters on NVMe: a gathered group computes on the
store's host buffer itself (no copy), within offload_param.buffer_count buffers."""

from __future__ import annotations

import pytest
from torch import nn
from zero_helpers import (
    config,
    engine_losses,
    make_batches,
    make_model,
    max_rel_diff,
    reference_losses,
)

import tiermem
from tiermem.store import TierKind

# the probes' own fetches differ from the recorded schedule (it is dropped for that step)
pytestmark = pytest.mark.filterwarnings("ignore::tiermem.store.StoreScheduleWarning")


def _config(path, buffer_count: int) -> dict:
    return config(
        stage=3,
        extra={
            "zero_optimization": {
                "offload_param": {
                    "device": "nvme",
                    "nvme_path": str(path),
                    "buffer_count": buffer_count,
                },
                "offload_optimizer": {"device": "cpu"},
            }
        },
    )


def _gathered_on_store_buffers(path, buffer_count: int) -> dict[str, bool]:
    """Per module: whether its gathered weight is the store's host copy of its shard."""
    model = make_model()
    engine, *_ = tiermem.initialize(model=model, config=_config(path, buffer_count))
    store = engine.placements.stores[0]
    group_of = {id(p): g for g in engine.groups for p in g.params}
    seen: dict[str, bool] = {}

    def probe(name):
        def hook(module, _args):
            weight = module.weight
            name_in_store = f"param.{group_of[id(weight)].key}"
            host = store.fetch(name_in_store, TierKind.HOST).wait()
            seen[name] = host.data_ptr() <= weight.data_ptr() < host.data_ptr() + host.nbytes
            store.release(name_in_store)

        return hook

    batches = make_batches(3)
    for step, (idx, tgt) in enumerate(batches):
        if step == len(batches) - 1:  # prefetch follows the first step's order from then on
            for name, module in model.named_modules():
                if isinstance(module, nn.Linear) and name.startswith("blocks."):
                    module.register_forward_pre_hook(probe(name))  # after the engine's gather
        loss = engine(idx, tgt)
        engine.backward(loss)
        engine.step()
    engine.close()
    return seen


def test_gathered_groups_compute_on_the_store_buffers(tmp_path):
    seen = _gathered_on_store_buffers(tmp_path, buffer_count=64)
    assert len(seen) == 8 and all(seen.values()), seen


def test_past_the_buffer_count_groups_are_copied(tmp_path):
    # one buffer's bytes: a group and the smaller one prefetched with it fit, two
    # large ones do not (the second is copied into a flat buffer of its own)
    seen = _gathered_on_store_buffers(tmp_path, buffer_count=1)
    assert any(seen.values()) and not all(seen.values()), seen


def test_lent_buffers_train_like_plain_torch(tmp_path):
    losses = engine_losses(_config(tmp_path, 64))
    assert max_rel_diff(losses, reference_losses()) <= 1e-5


def test_a_lent_copy_read_by_saved_views_stays_until_they_are_gone(tmp_path):
    import torch

    from tiermem.engine.nvme_tiers import StoreParamHome
    from tiermem.store import StoreConfig, TensorStore

    store = TensorStore(
        StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path / "s",), prefetch_bytes=0)
    )
    home = StoreParamHome(store, torch.device("cpu"), lend_bytes=1 << 20)
    home.put(0, torch.arange(1024, dtype=torch.float32))
    home.put(1, torch.zeros(1024, dtype=torch.float32))
    flat = home.lend(0)
    weight = torch.nn.Parameter(torch.empty(0))
    weight.data = flat[:12].view(3, 4)
    out = torch.nn.functional.linear(torch.randn(2, 4, requires_grad=True), weight)
    weight.data = torch.empty(0)  # the group is freed after forward
    del flat
    home.give_back(0)
    assert store.info("param.0")["states"][TierKind.HOST].valid  # still held for backward
    # room for the filler only if param.0 went: held, so the store refuses
    with pytest.raises(tiermem.store.StoreBudgetError):
        store.register("filler", (1 << 18) - 512, torch.float32)
    again = home.lend(0)  # gathered again before backward: the same copy, lent again
    assert torch.equal(again, torch.arange(1024, dtype=torch.float32))
    home.give_back(0)
    del again
    del out  # backward done: the graph and its saved view are freed
    home.lend(1)  # the next call releases the copy nobody reads any more
    home.give_back(1)
    store.register("filler", (1 << 18) - 512, torch.float32)  # now there is room
    store.close()


def test_without_a_count_of_users_nothing_is_lent(tmp_path, monkeypatch):
    import tiermem.engine.nvme_tiers as nvme_tiers

    monkeypatch.setattr(nvme_tiers, "CAN_COUNT_USERS", False)
    seen = _gathered_on_store_buffers(tmp_path, buffer_count=64)
    assert len(seen) == 8 and not any(seen.values()), seen
