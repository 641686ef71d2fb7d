"""GPT presets: parameter counts as stated, the tied LM head, a loss near ln(vocab) at init."""

from __future__ import annotations

import math

import pytest
import torch

from tiermem.train.models import GPT, PRESETS, GPTConfig, preset


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_parameter_count_and_initial_loss(name):
    cfg = preset(name)
    torch.manual_seed(0)
    model = GPT(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters
    assert model.lm_head.weight is model.wte.weight
    idx = torch.randint(0, 256, (2, cfg.seq_len))
    loss = model(idx, torch.roll(idx, -1, dims=1))
    assert loss.shape == () and abs(float(loss.detach()) - math.log(256)) < 0.1


def test_large_presets_are_their_size():
    assert 1.0e9 < PRESETS["1b"].num_parameters < 1.3e9
    assert 6.0e9 < PRESETS["7b"].num_parameters < 7.0e9


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="num_heads"):
        GPTConfig(hidden_size=64, num_layers=1, num_heads=3, seq_len=8)
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        preset("huge")
