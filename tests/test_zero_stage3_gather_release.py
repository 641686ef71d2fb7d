"""Stage 3: parameters are gathered just before their module runs and released after."""

from __future__ import annotations

import torch
from torch import nn
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.partition import GroupState


def _engine(clip: float = 0.0, **extra):
    model = make_model()
    cfg = config(stage=3, clip=clip, extra={"zero_optimization": extra} if extra else None)
    engine, *_ = tiermem.initialize(model=model, config=cfg)
    return engine, model


def test_params_are_empty_between_uses_and_full_inside_their_module():
    # clipping: the gradients wait in their accumulators for the global norm (without
    # it each group is updated during backward and its gradient never lands there)
    engine, model = _engine(clip=1.0)
    assert all(p.numel() == 0 for p in model.parameters())
    seen: dict[str, tuple] = {}

    def probe(name):
        def hook(module, _args):
            seen[name] = tuple(tuple(p.shape) for p in module.parameters(recurse=False))

        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
            module.register_forward_pre_hook(probe(name))  # runs after the engine's gather
    idx, tgt = make_batches(1)[0]
    loss = engine(idx, tgt)
    assert seen["lm_head"] == ((64, 32),)  # the tied weight, gathered for the head
    assert seen["blocks.1.fc"] == ((128, 32), (128,))
    assert all(g.state is GroupState.SHARDED for g in engine.groups)
    assert all(p.numel() == 0 for p in model.parameters())
    engine.backward(loss)
    assert all(g.state is GroupState.SHARDED and g.refs == 0 for g in engine.groups)
    assert all(p.grad is None for p in model.parameters())
    sums = []
    for gi in engine.reducer.trainable:
        sums.append(float(engine.reducer.open_owner_grad(gi).abs().sum()))
        engine.reducer.close_owner_grad(gi)
    assert all(s > 0 for s in sums)  # every group's gradient reached its accumulator
    engine.step()
    engine.close()


def _gathering_seen(engine, model, passes: int) -> list[int]:
    """Per pass, how often a group was being gathered ahead of its module."""
    counts = [0] * passes
    current = [0]

    def hook(_module, _args):
        counts[current[0]] += sum(g.state is GroupState.GATHERING for g in engine.groups)

    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.register_forward_pre_hook(hook)
    for i, (idx, tgt) in enumerate(make_batches(passes)):
        current[0] = i
        engine.backward(engine(idx, tgt))
        engine.step()
    return counts


def test_first_pass_records_module_order_and_later_passes_prefetch():
    engine, model = _engine()
    counts = _gathering_seen(engine, model, 2)
    trace = engine.param_scheduler.forward_trace
    names = [engine.groups[g].layout.module_name for g in trace.order]
    assert names[:3] == ["wte", "wpe", "blocks.0.ln1"]
    assert names[-1] == "ln_f"  # lm_head reuses wte's group, already in the trace
    sched = engine.param_scheduler
    backward = [engine.groups[g].layout.module_name for g in sched.backward_trace.order]
    assert backward[:2] == ["wte", "ln_f"]  # the head (tied weight) goes first
    # the first pass only records; the second gathers ahead of use
    assert counts[0] == 0 and counts[1] > 0
    engine.close()


def test_no_prefetch_with_a_zero_bucket():
    engine, model = _engine(stage3_prefetch_bucket_size=0)
    assert _gathering_seen(engine, model, 2) == [0, 0]
    engine.close()


def test_small_groups_under_the_persistence_threshold_stay_gathered_and_updated():
    engine, model = _engine(stage3_param_persistence_threshold=100)  # layer norms: 64 elements
    ln = model.blocks[0].ln1
    assert ln.weight.shape == (32,) and model.blocks[0].qkv.weight.numel() == 0
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()
    group = next(g for g in engine.groups if g.layout.module_name == "blocks.0.ln1")
    assert group.state is GroupState.GATHERED
    master = engine.master_state(group.index)["master"]
    assert torch.equal(torch.cat([ln.weight.detach(), ln.bias.detach()]), master[:64])
    assert not torch.equal(ln.weight.detach(), torch.ones(32))  # the step changed it
    engine.close()
