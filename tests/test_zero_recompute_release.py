"""Stage 3 with activation checkpointing: backward leaves no group gathered.

torch's non-reentrant checkpoint stops the recompute as soon as the last
saved tensor it needs exists (early stop), in the middle of the last
module's forward: that module's pre-forward hook acquired its groups but its
post-forward hook never runs. The groups must still be released, or one
group per checkpointed block stays gathered for good (memory growing with
the number of layers, and with every step).
"""

from __future__ import annotations

import pytest
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.partition import GroupState


@pytest.mark.parametrize("offload_param", ["none", "nvme"])
def test_no_group_stays_gathered_after_a_checkpointed_backward(offload_param, tmp_path):
    model = make_model()
    extra = {"activation_checkpointing": {}}
    cfg = config(stage=3, offload_param=offload_param, extra=extra)
    if offload_param == "nvme":
        zero = cfg["zero_optimization"]
        zero["offload_param"]["nvme_path"] = str(tmp_path)
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    model.checkpoint_fn = engine.checkpoint
    for idx, tgt in make_batches(3):
        engine.backward(engine(idx, tgt))
        held = [(g.layout.module_name, g.refs) for g in engine.groups if g.refs]
        gathered = [
            g.layout.module_name for g in engine.groups if g.state is not GroupState.SHARDED
        ]
        assert held == [] and gathered == []
        engine.step()
    engine.close()
