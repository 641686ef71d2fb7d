"""The GPT preset built inside tiermem.init_context has the weights of a plain build.

Its GPT-2 initialisation must reach parameters that are already partitioned
when the root module's ``__init__`` runs it (a loop over ``named_modules()``
wrote into empty placeholders and the init was silently lost).
"""

from __future__ import annotations

import torch

import tiermem
from tiermem.train.models import GPT, GPTConfig

SHAPE = GPTConfig(vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, seq_len=16)


def test_preset_built_in_the_context_keeps_its_init(tmp_path):
    cfg = {
        "train_micro_batch_size_per_gpu": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,  # partition even these small ones
            "offload_param": {"device": "nvme", "nvme_path": str(tmp_path)},
            "offload_optimizer": {"device": "nvme", "nvme_path": str(tmp_path)},
        },
    }
    torch.manual_seed(0)
    plain = GPT(SHAPE)
    torch.manual_seed(0)
    with tiermem.init_context(config=cfg):
        model = GPT(SHAPE)
    # the blocks were partitioned before GPT.__init__ initialised them
    assert all(p.numel() == 0 for p in model.blocks.parameters())
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    try:
        got = engine.full_state_dict()
        expected = dict(plain.named_parameters())
        assert sorted(got) == sorted(expected)
        for name, value in expected.items():
            assert torch.equal(got[name], value.detach()), name
        # the depth-scaled residual projections are not PyTorch's default init
        assert abs(got["blocks.0.proj.weight"].std().item() - 0.02 / 6**0.5) < 0.002
    finally:
        engine.close()
