"""Hugging Face models built inside tiermem.init_context get exactly the weights and buffers
of an eager build with the same seed, for seven architectures, and train like it.

transformers initialises weights after construction (post_init -> _init_weights on each
module, then ties embeddings); inside the context the modules are already partitioned,
and that init used to be lost or to run on empty placeholders (BERT raised IndexError,
Mixtral's experts kept uninitialised memory).
"""

from __future__ import annotations

import pytest
import torch
from hf_models import ARCHITECTURES, batch, build

import tiermem


def _config(tmp_path, precision: str = "fp32") -> dict:
    nvme = {"device": "nvme", "nvme_path": str(tmp_path)}
    cfg = {
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "weight_decay": 0.01}},
        "gradient_clipping": 1.0,
        "zero_optimization": {
            "stage": 3,
            "stage3_param_persistence_threshold": 0,  # partition even the smallest modules
            "offload_param": dict(nvme),
            "offload_optimizer": dict(nvme),
        },
    }
    if precision == "bf16":
        cfg["bf16"] = {"enabled": True}
    return cfg


def _masters(engine) -> dict[str, torch.Tensor]:
    """Each parameter's fp32 master weight, by name (one rank: the shard is the group)."""
    out = {}
    for group in engine.groups:
        master = engine.shard_optimizer.state(group.key)["master"]
        for slot in group.layout.slots:
            out[slot.name] = master[slot.offset : slot.offset + slot.numel].view(slot.shape)
    return out


def _in_context(name, cfg):
    with tiermem.init_context(config=cfg):
        return build(name)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_weights_and_buffers_equal_an_eager_build(tmp_path, name):
    eager = build(name)
    cfg = _config(tmp_path)
    model = _in_context(name, cfg)
    # the model was never whole: everything below the root's children is partitioned
    assert any(p.numel() == 0 for p in model.parameters())
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    try:
        got = engine.full_state_dict()
        expected = dict(eager.named_parameters())  # a tied weight once, as in the engine
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value.detach()), key
        buffers = dict(model.named_buffers())
        for key, value in eager.named_buffers():
            assert torch.equal(buffers[key], value), key
        # tied weights stay one parameter (same object), as in the eager model
        eager_ties = _ties(eager)
        assert eager_ties == _ties(model)
    finally:
        engine.close()


def _ties(model) -> set[tuple[str, ...]]:
    names: dict[int, list[str]] = {}
    for key, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(key)
    return {tuple(v) for v in names.values() if len(v) > 1}


@pytest.mark.parametrize("name", ["gpt2", "llama", "t5"])
def test_bf16_masters_equal_an_eager_build(tmp_path, name):
    """Under bf16 the fp32 masters keep the init's unrounded values (init ran on fp32)."""
    cfg = _config(tmp_path, "bf16")
    eager_engine, *_ = tiermem.initialize(model=build(name), config=_config(tmp_path / "e", "bf16"))
    expected = _masters(eager_engine)
    eager_engine.close()
    engine, *_ = tiermem.initialize(model=_in_context(name, cfg), config=cfg)
    try:
        got = _masters(engine)
        assert sorted(got) == sorted(expected)
        for key, value in expected.items():
            assert torch.equal(got[key], value), key
    finally:
        engine.close()


def _losses(engine, name: str, steps: int = 2) -> list[float]:
    torch.manual_seed(7)  # dropout
    out = []
    for step in range(steps):
        loss = engine(**batch(name, step)).loss
        engine.backward(loss)
        engine.step()
        out.append(loss.item())
    return out


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_trajectory_equals_an_eager_build(tmp_path, name):
    eager_cfg = _config(tmp_path / "eager")
    engine, *_ = tiermem.initialize(model=build(name), config=eager_cfg)
    expected = _losses(engine, name)
    engine.close()
    cfg = _config(tmp_path / "ctx")
    engine, *_ = tiermem.initialize(model=_in_context(name, cfg), config=cfg)
    try:
        got = _losses(engine, name)
    finally:
        engine.close()
    assert all(torch.isfinite(torch.tensor(got)))
    rel = max(abs(a - b) / abs(b) for a, b in zip(got, expected, strict=True))
    assert rel <= 1e-5, (got, expected)


def test_each_group_is_gathered_at_most_twice_while_built(tmp_path, monkeypatch):
    """Once for its own module's init, once for its parent's (whose init may set its
    children's weights); the outer model's post_init skips the modules a nested model's
    post_init already initialised, so the tiers are not read and written again."""
    from collections import Counter

    from tiermem.engine import zero_init

    counts: Counter = Counter()
    real = zero_init.InitContext._full_fp32

    def spy(self, group):
        counts[group.key] += 1
        return real(self, group)

    monkeypatch.setattr(zero_init.InitContext, "_full_fp32", spy)
    with tiermem.init_context(config=_config(tmp_path)):
        build("llama")  # LlamaForCausalLM's post_init runs after LlamaModel's
    assert len(counts) > 10 and max(counts.values()) <= 2
