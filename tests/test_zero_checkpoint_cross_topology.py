"""A checkpoint loads under another topology: 1 <-> 2 gloo ranks, stage 2 <-> 3,
offload none/cpu <-> nvme.

The state moves bit-exactly: a checkpoint saved right after loading holds the
same parameters, masters and moments, bit for bit, as the one loaded. The
losses of the continued run agree with the uninterrupted run within fp32
rounding only, because the topologies themselves compute differently (torch's
AdamW on the device vs the CPU Adam kernel may differ in the last bit; two
ranks average half-batch gradients)."""

from __future__ import annotations

import json
import warnings

import torch
from safetensors import safe_open
from zero_helpers import BATCH, config, make_batches, make_model, max_rel_diff, run_ranks

import tiermem
from tiermem.engine.checkpoint import load_checkpoint, save_checkpoint


def topology(stage: int, offload: str, nvme_dir, *, world: int = 1) -> dict:
    """Stage ``stage`` with parameters (stage 3) and optimizer states on ``offload``."""
    if offload != "nvme":
        param = offload if stage == 3 else "none"
        return config(stage=stage, offload=offload, offload_param=param, world=world)
    cfg = config(stage=stage, world=world)
    nvme = {"device": "nvme", "nvme_path": str(nvme_dir), "buffer_count": 1}
    cfg["zero_optimization"].update(offload_optimizer=nvme, sub_group_size=1000)
    if stage == 3:
        cfg["zero_optimization"]["offload_param"] = nvme
    return cfg


def train(engine, batches, *, rank: int = 0, world: int = 1) -> list[float]:
    per = BATCH // world
    losses = []
    for idx, tgt in batches:
        loss = engine(idx[rank * per : (rank + 1) * per], tgt[rank * per : (rank + 1) * per])
        engine.backward(loss)
        engine.step()
        value = loss.detach().float().reshape(1).clone()
        if world > 1:
            torch.distributed.all_reduce(value)
            value /= world
        losses.append(float(value))
    return losses


def consolidated(ckpt) -> dict[tuple[str, str], torch.Tensor]:
    """Every (parameter, kind) of a checkpoint, assembled whole with the safetensors library."""
    manifest = json.loads((ckpt / "manifest.json").read_text())["manifest"]
    out = {}
    for name, info in manifest["params"].items():
        for kind, pieces in info["pieces"].items():
            parts = []
            for file, key, start, end in pieces:
                with safe_open(ckpt / file, framework="pt") as f:
                    parts.append(f.get_tensor(key))
                assert end - start == parts[-1].numel()
            out[(name, kind)] = torch.cat(parts)
            assert out[(name, kind)].numel() == torch.Size(info["shape"]).numel()
    return out


def assert_same_state(a, b) -> None:
    ta, tb = consolidated(a), consolidated(b)
    assert ta.keys() == tb.keys()
    for key, t in ta.items():
        assert t.dtype == tb[key].dtype and torch.equal(t, tb[key]), key
    ma = json.loads((a / "manifest.json").read_text())["manifest"]
    mb = json.loads((b / "manifest.json").read_text())["manifest"]
    assert ma["counters"] == mb["counters"]
    assert ma["lr_scheduler"] == mb["lr_scheduler"]
    steps = {n: i["adam_step"] for n, i in ma["params"].items()}
    assert steps == {n: i["adam_step"] for n, i in mb["params"].items()}


def test_stage_and_placement_changes_on_one_rank(tmp_path):
    warnings.simplefilter("ignore")  # the NVMe store re-records its schedule after a load
    chain = [(2, "none"), (3, "nvme"), (2, "cpu"), (3, "cpu"), (3, "nvme"), (3, "none")]
    per = 2
    batches = make_batches(per * len(chain))
    engine, *_ = tiermem.initialize(model=make_model(), config=topology(2, "none", None))
    uninterrupted = train(engine, batches)
    engine.close()
    losses, previous = [], None
    for i, (stage, offload) in enumerate(chain):
        cfg = topology(stage, offload, tmp_path / f"swap{i}")
        engine, *_ = tiermem.initialize(model=make_model(seed=100 * i), config=cfg)
        if previous is not None:
            load_checkpoint(engine, previous)
            echo = save_checkpoint(engine, tmp_path / f"echo{i}")
            assert_same_state(previous, echo)
        losses += train(engine, batches[i * per : (i + 1) * per])
        previous = save_checkpoint(engine, tmp_path / f"ckpt{i}")
        engine.close()
    assert max_rel_diff(losses, uninterrupted) <= 1e-5


def _two_ranks(rank: int, world: int, ckpt_in: str, ckpt_out: str, first: int, last: int) -> list:
    engine, *_ = tiermem.initialize(
        model=make_model(seed=7), config=topology(2, "none", None, world=world)
    )
    path, client = load_checkpoint(engine, ckpt_in)
    assert client == {"from": "one rank"}
    save_checkpoint(engine, ckpt_out, tag="echo")  # the state as loaded, saved by 2 ranks
    losses = train(engine, make_batches(last)[first:last], rank=rank, world=world)
    save_checkpoint(engine, ckpt_out, client_state={"from": "two ranks"})
    engine.close()
    return losses


def test_one_rank_to_two_ranks_and_back(tmp_path):
    warnings.simplefilter("ignore")
    batches = make_batches(9)
    engine, *_ = tiermem.initialize(model=make_model(), config=topology(3, "cpu", None))
    train(engine, batches[:3])
    first = save_checkpoint(engine, tmp_path / "one", client_state={"from": "one rank"})
    reference = train(engine, batches[3:])  # steps 3..8, uninterrupted on one rank
    engine.close()

    # stage 3 on 1 rank (host) -> stage 2 on 2 ranks (device) for steps 3..5 -> back
    ranks = run_ranks(_two_ranks, str(tmp_path / "one"), str(tmp_path / "two"), 3, 6)
    assert ranks[0] == ranks[1]
    assert_same_state(first, tmp_path / "two" / "echo")
    assert max_rel_diff(ranks[0], reference[:3]) <= 1e-5
    ckpt = tmp_path / "two" / "global_step6"
    manifest = json.loads((ckpt / "manifest.json").read_text())["manifest"]
    assert sorted(manifest["files"]) == ["rank00000.safetensors", "rank00001.safetensors"]
    assert manifest["topology"]["world_size"] == 2 and len(manifest["rng"]) == 2

    # 2 ranks (stage 2) -> stage 3 with NVMe offload on 1 rank for steps 6..8
    engine, *_ = tiermem.initialize(
        model=make_model(seed=11), config=topology(3, "nvme", tmp_path / "swap")
    )
    path, client = load_checkpoint(engine, tmp_path / "two")
    assert path == ckpt and client == {"from": "two ranks"}
    assert engine.global_steps == 6
    assert_same_state(ckpt, save_checkpoint(engine, tmp_path / "three"))
    continued = train(engine, batches[6:])
    engine.close()
    assert max_rel_diff(continued, reference[3:]) <= 1e-5
