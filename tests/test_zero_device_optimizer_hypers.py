"""The device shard optimizer (offload_optimizer none on a GPU; run here on the CPU) updates
each shard with torch's single-tensor AdamW/Adam arithmetic, range by range with each param
group's hyperparameters, touching only the shards it is given; the engine trains and resumes
a checkpoint with it like plain torch with the same param groups."""

from __future__ import annotations

import pytest
import torch
from zero_helpers import LR, STEPS, config, make_batches, make_model, max_rel_diff

import tiermem
from tiermem.engine import placement
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint
from tiermem.engine.checkpoint_state import optimizer_access
from tiermem.engine.optimizer_step import (
    AdamHyper,
    DeviceShardOptimizer,
    HostShardOptimizer,
    StepItem,
)


def _hyper(
    lr: float,
    weight_decay: float,
    *,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    adamw: bool = True,
    bias_correction: bool = True,
) -> AdamHyper:
    return AdamHyper(
        lr=lr,
        betas=betas,
        eps=eps,
        weight_decay=weight_decay,
        adamw_mode=adamw,
        bias_correction=bias_correction,
    )


def _item(key: int, grad: torch.Tensor, out: torch.Tensor, segments, step: int = 1) -> StepItem:
    return StepItem(key, lambda: grad, lambda: None, lambda: out, lambda: None, step, segments)


def test_whole_shards_of_different_param_groups_get_their_own_hyperparameters():
    torch.manual_seed(0)
    masters = [torch.randn(8), torch.randn(5)]
    grads = [torch.randn(8), torch.randn(5)]
    hypers = [_hyper(1e-2, 0.1), _hyper(1e-4, 0.0)]
    opt = DeviceShardOptimizer(torch.device("cpu"))
    for key, master in enumerate(masters):
        opt.add(key, master)
    outs = [torch.empty_like(m) for m in masters]
    items = [
        _item(key, grads[key], outs[key], ((0, masters[key].numel(), hypers[key]),))
        for key in range(2)
    ]
    opt.step(items, hypers[0], grad_scale=1.0)

    ref = [m.clone().requires_grad_(True) for m in masters]
    torch_opt = torch.optim.AdamW(
        [
            {"params": [ref[k]], "lr": hypers[k].lr, "weight_decay": hypers[k].weight_decay}
            for k in range(2)
        ]
    )
    for r, g in zip(ref, grads, strict=True):
        r.grad = g.clone()
    torch_opt.step()
    for key in range(2):
        assert torch.equal(opt.state(key)["master"], ref[key].detach()), key
        assert torch.equal(outs[key], ref[key].detach()), key


# two param groups within one shard (a Linear's weight with decay, its bias without), with
# different lr, betas, eps and weight decay; odd sizes so one range starts mid-vector
MIXED = [
    (0, 37, dict(lr=3e-2, weight_decay=0.1, betas=(0.9, 0.99), eps=1e-8)),
    (37, 50, dict(lr=1e-3, weight_decay=0.0, betas=(0.8, 0.95), eps=1e-6)),
]


@pytest.mark.parametrize("adamw", [True, False], ids=["AdamW", "Adam"])
@pytest.mark.parametrize("decay", [True, False], ids=["decay", "no-decay"])
def test_a_shard_split_between_param_groups_matches_torch_per_range(adamw, decay):
    torch.manual_seed(1)
    n, steps, grad_scale = MIXED[-1][1], 6, 0.37
    master = torch.randn(n)
    grads = [torch.randn(n) * (1 + 10 * s) for s in range(steps)]
    ranges = [
        (lo, hi, {**kw, "weight_decay": kw["weight_decay"] if decay else 0.0})
        for lo, hi, kw in MIXED
    ]
    if decay:  # both ranges decay, at different rates
        ranges[1][2]["weight_decay"] = 0.03
    segments = tuple((lo, hi, _hyper(adamw=adamw, **kw)) for lo, hi, kw in ranges)

    opt = DeviceShardOptimizer(torch.device("cpu"))
    opt.add(0, master)
    out = torch.empty(n)
    for s in range(steps):
        opt.step([_item(0, grads[s], out, segments, s + 1)], segments[0][2], grad_scale=grad_scale)

    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    refs = [master[lo:hi].clone().requires_grad_(True) for lo, hi, _ in ranges]
    torch_opt = cls([{"params": [r], **kw} for r, (_, _, kw) in zip(refs, ranges, strict=True)])
    ref_out = {"master": torch.empty(n), "exp_avg": torch.empty(n), "exp_avg_sq": torch.empty(n)}
    for s in range(steps):
        for r, (lo, hi, _) in zip(refs, ranges, strict=True):
            r.grad = grads[s][lo:hi] * grad_scale
        torch_opt.step()
    for r, (lo, hi, _) in zip(refs, ranges, strict=True):
        ref_out["master"][lo:hi] = r.detach()
        ref_out["exp_avg"][lo:hi] = torch_opt.state[r]["exp_avg"]
        ref_out["exp_avg_sq"][lo:hi] = torch_opt.state[r]["exp_avg_sq"]

    state = opt.state(0)
    assert not torch.equal(state["master"], master)  # it moved
    for kind, expected in ref_out.items():
        # the same operations in the same order as torch's single-tensor step: bit for bit
        torch.testing.assert_close(state[kind], expected, rtol=0, atol=0, msg=kind)
    assert torch.equal(out, state["master"])
    # and the hyperparameters matter: one set for the whole shard gives another result
    single = DeviceShardOptimizer(torch.device("cpu"))
    single.add(0, master)
    for s in range(steps):
        single.step([_item(0, grads[s], out, (), s + 1)], segments[0][2], grad_scale=grad_scale)
    assert (single.state(0)["master"][37:] - ref_out["master"][37:]).abs().max() > 1e-4


def test_without_bias_correction_it_matches_the_cpu_kernel():
    torch.manual_seed(2)
    n = 50
    segments = tuple((lo, hi, _hyper(bias_correction=False, **kw)) for lo, hi, kw in MIXED)
    master = torch.randn(n)
    dev = DeviceShardOptimizer(torch.device("cpu"))
    host = HostShardOptimizer(sub_group_size=16)
    for opt in (dev, host):
        opt.add(0, master)
    for s in range(5):
        grad = torch.randn(n)
        for opt in (dev, host):
            opt.step(
                [_item(0, grad.clone(), torch.empty(n), segments, s + 1)],
                segments[0][2],
                grad_scale=0.5,
            )
    for kind in ("master", "exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(dev.state(0)[kind], host.state(0)[kind], rtol=1e-6, atol=1e-7)
    # step 1 without bias correction, in float64: p - lr * (1-b1) g / (sqrt((1-b2) g^2) + eps)
    lr, eps, grad = 1e-2, 1e-8, torch.randn(n)
    hp = _hyper(lr, 0.0, bias_correction=False)
    without = DeviceShardOptimizer(torch.device("cpu"))
    without.add(0, master)
    without.step([_item(0, grad, torch.empty(n), ())], hp, grad_scale=1.0)
    g = grad.double()
    expected = master.double() - lr * 0.1 * g / ((0.001 * g * g).sqrt() + eps)
    torch.testing.assert_close(without.state(0)["master"].double(), expected, rtol=0, atol=3e-7)
    assert (expected - master.double()).abs().min() > 1e-3  # moved by ~3*lr, not ~lr


def test_a_step_touches_only_the_shards_it_is_given():
    opt = DeviceShardOptimizer(torch.device("cpu"))
    for key in range(4):
        opt.add(key, torch.full((6,), float(key)))
    tensors = {key: opt._states[key] for key in range(4)}
    versions = {key: [t._version for t in ts] for key, ts in tensors.items()}
    opened = []
    hp = _hyper(1e-2, 0.1)

    def item(key: int) -> StepItem:
        def open_grad():
            opened.append(key)
            return torch.ones(6)

        return StepItem(key, open_grad, lambda: None, lambda: torch.empty(6), lambda: None, 1)

    opt.step([item(2)], hp, grad_scale=1.0)
    assert opened == [2]
    for key in range(4):
        now = [t._version for t in tensors[key]]
        if key == 2:
            assert all(a > b for a, b in zip(now, versions[key], strict=True))
        else:  # not even an in-place no-op on another shard's state
            assert now == versions[key], key
            st = opt.state(key)
            assert torch.equal(st["master"], torch.full((6,), float(key)))
            assert not st["exp_avg"].any() and not st["exp_avg_sq"].any()


def test_checkpoint_access_reads_and_fills_the_states():
    opt = DeviceShardOptimizer(torch.device("cpu"))
    opt.add(5, torch.zeros(10))
    access = optimizer_access(opt)
    assert access.numel(5) == 10
    values = {
        k: torch.arange(10.0) * (i + 1) for i, k in enumerate(("master", "exp_avg", "exp_avg_sq"))
    }
    for lo, hi in ((0, 4), (4, 10)):
        with access.write(5, lo, hi, step=3) as states:
            for kind, t in states.items():
                t.copy_(values[kind][lo:hi])
    state = opt.state(5)
    for kind in values:
        assert torch.equal(state[kind], values[kind]), kind
    with access.read(5, 2, 7) as states:
        for kind in values:
            assert torch.equal(states[kind], values[kind][2:7]), kind


# -- through the engine, with the device optimizer standing in for the CPU's -----------------
DECAY, NO_DECAY_LR = 0.1, LR / 3


@pytest.fixture
def device_optimizer(monkeypatch):
    """``offload_optimizer: none`` on the CPU gets the device optimizer, as on a GPU."""
    made = []

    def factory(**_kw):
        made.append(DeviceShardOptimizer(torch.device("cpu")))
        return made[-1]

    monkeypatch.setattr(placement, "HostShardOptimizer", factory)
    return made


def _groups(model: torch.nn.Module) -> list[dict]:
    # [Note: a Linear's weight decays and its bias does not: one module, one shard, two
    #  param groups, the split the Hugging Face Trainer makes]
    decay = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() == 2]
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    return [
        {"params": decay, "weight_decay": DECAY},
        {"params": rest, "weight_decay": 0.0, "lr": NO_DECAY_LR},
    ]


def _torch_losses(batches) -> list[float]:
    model = make_model()
    opt = torch.optim.AdamW(_groups(model), lr=LR, betas=(0.9, 0.99), eps=1e-8)
    losses = []
    for idx, tgt in batches:
        loss = model(idx, tgt)
        losses.append(float(loss.detach()))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return losses


def _train(engine, batches) -> list[float]:
    losses = []
    for idx, tgt in batches:
        loss = engine(idx, tgt)
        losses.append(float(loss.detach()))
        engine.backward(loss)
        engine.step()
    return losses


@pytest.mark.parametrize(
    "stage,clip", [(1, 0.0), (3, 0.0), (3, 1e9)], ids=["stage1", "stage3", "stage3-step"]
)
def test_engine_with_split_param_groups_trains_like_torch_and_resumes(
    device_optimizer, stage, clip, tmp_path
):
    # clip 0: each group is stepped alone during backward; a huge clip: one step() for all
    batches = make_batches(STEPS)
    reference = _torch_losses(batches)
    cfg = config(stage=stage, clip=clip)
    model = make_model()
    engine, optimizer, _, _ = tiermem.initialize(
        model=model, config=cfg, model_parameters=_groups(model)
    )
    assert isinstance(engine.shard_optimizer, DeviceShardOptimizer) and device_optimizer
    assert [g["weight_decay"] for g in optimizer.param_groups] == [DECAY, 0.0]
    half = STEPS // 2
    losses = _train(engine, batches[:half])
    save_checkpoint(engine, tmp_path / "ckpt")
    losses += _train(engine, batches[half:])
    engine.close()
    assert max_rel_diff(losses, reference) <= 1e-5
    assert reference[-1] < reference[0] - 0.1  # the trajectory moves

    model = make_model(seed=123)
    engine, *_ = tiermem.initialize(model=model, config=cfg, model_parameters=_groups(model))
    load_checkpoint(engine, tmp_path / "ckpt")
    resumed = _train(engine, batches[half:])
    engine.close()
    assert resumed == losses[half:]  # the states came back bit for bit
