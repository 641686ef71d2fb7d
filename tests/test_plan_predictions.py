"""The planner's bytes per tier for the tiny and small presets equal what the engine allocates.

Each placement's config (as ``tiermem plan`` writes it) runs two steps of
the preset's GPT (its width and depth; sequence 32 to keep the test quick);
then the engine's own tensors (parameter shards, fp32 master weights and Adam
moments, gradient accumulators) must have exactly the
predicted sizes, the store's host budget must be exactly the predicted
offload buffers, the bytes on NVMe must lie between the predicted model state
and the predicted total (state plus copy-on-write headroom). (A step's NVMe
traffic is checked on a larger model in test_plan_rss.py: on these small ones
the store's prefetch timing decides how much is read twice.)
"""

from __future__ import annotations

import pytest
from plan_observe import observe, settings_for

from tiermem.planning import Placement, estimate, gpt_shape
from tiermem.planning.machine import MachineFacts
from tiermem.train.models import PRESETS

STATE_ITEMS = ("parameter shards", "fp32 master + Adam moments", "fp32 gradient accumulators")


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("placement", list(Placement), ids=lambda p: p.name.lower())
def test_bytes_per_tier_match_the_engine(tmp_path, preset, placement):
    cfg = PRESETS[preset]
    seq, micro = 32, 2
    shape = gpt_shape(
        name=preset,
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        seq_len=seq,
    )
    machine = MachineFacts(host_bytes=1 << 40, nvme_path=str(tmp_path), nvme_free_bytes=1 << 40)
    predicted = estimate(shape, machine, settings_for(cfg.hidden_size, micro, placement), placement)
    seen = observe(
        placement,
        str(tmp_path),
        hidden=cfg.hidden_size,
        layers=cfg.num_layers,
        seq=seq,
        micro=micro,
        warm=False,
        steps=2,
    )
    in_memory = {**predicted.device.items, **predicted.host.items}
    expected = {k: in_memory[k] for k in STATE_ITEMS if k in in_memory}
    assert seen["observed"] == expected
    if placement.uses_nvme:
        store = seen["store"]
        assert (
            store["host"]["budget"] == predicted.host.items["offload buffers (store host budget)"]
        )
        state = sum(v for k, v in predicted.nvme.items.items() if not k.startswith("write-back"))
        assert state <= store["nvme"]["used"] <= store["nvme"]["peak"] <= predicted.nvme.total
    else:
        assert seen["store"] == {} and predicted.nvme.total == 0
