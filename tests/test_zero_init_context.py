"""tiermem.init_context: a model built partitioned trains exactly like one built whole."""

from __future__ import annotations

import pytest
import torch
from zero_helpers import (
    HIDDEN,
    TinyGPT,
    config,
    engine_losses,
    make_model,
    max_rel_diff,
    reference_losses,
)

import tiermem


def _config(tmp_path, offload: str) -> dict:
    cfg = config(stage=3, offload=offload, offload_param=offload)
    if offload == "nvme":
        for key in ("offload_param", "offload_optimizer"):
            cfg["zero_optimization"][key]["nvme_path"] = str(tmp_path)
    return cfg


@pytest.mark.parametrize("offload", ["none", "cpu", "nvme"])
def test_model_built_in_the_context_matches_torch(tmp_path, offload):
    cfg = _config(tmp_path, offload)
    torch.manual_seed(0)
    with tiermem.init_context(config=cfg):
        model = TinyGPT()
    # every parameter is partitioned once the context exits (the model never was whole)
    assert all(p.numel() == 0 for p in model.parameters())
    losses = engine_losses(cfg, model=model)
    assert max_rel_diff(losses, reference_losses()) <= 1e-5


def test_initial_weights_equal_a_plain_build(tmp_path):
    cfg = _config(tmp_path, "cpu")
    torch.manual_seed(0)
    with tiermem.init_context(config=cfg):
        model = TinyGPT()
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    plain = make_model()
    got = engine.full_state_dict()
    expected = {n: p.detach() for n, p in plain.named_parameters()}
    assert sorted(got) == sorted(expected)  # named after the model, tied weight once
    for name, value in expected.items():
        assert torch.equal(got[name], value), name
    engine.close()


def test_children_partitioned_while_the_parent_is_built(tmp_path):
    cfg = _config(tmp_path, "none")
    seen = {}

    class Outer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Sequential(torch.nn.Linear(HIDDEN, HIDDEN))
            # the grandchild was partitioned when `inner` was registered here
            seen["grandchild"] = self.inner[0].weight.numel()
            # a direct child's parameters can still be set in __init__
            torch.nn.init.constant_(self.inner[0].bias, 0.25)

    with tiermem.init_context(config=cfg) as ctx:
        outer = Outer()
        with ctx.gathered(outer.inner[0]):  # changing partitioned parameters explicitly
            outer.inner[0].weight.fill_(0.5)
    assert seen["grandchild"] == 0
    engine, *_ = tiermem.initialize(model=outer, config=cfg)
    state = engine.full_state_dict()
    assert torch.equal(state["inner.0.weight"], torch.full((HIDDEN, HIDDEN), 0.5))
    engine.close()


def test_context_needs_stage_3_and_the_same_config(tmp_path):
    with pytest.raises(ValueError, match="stage 3"):
        tiermem.init_context(config=config(stage=2))
    with tiermem.init_context(config=_config(tmp_path, "cpu")):
        model = TinyGPT()
    with pytest.raises(ValueError, match="same config"):
        tiermem.initialize(model=model, config=_config(tmp_path, "none"))
