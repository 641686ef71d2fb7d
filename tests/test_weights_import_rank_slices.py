"""With 2 ranks at stage 3 each rank reads only its own element range of every parameter
(from a safetensors file and from a memory-mapped PyTorch file), never the whole model, and
the two ranks together fill it exactly: their losses equal load_state_dict + initialize. At
stage 2 too, each rank reads its shard and ends up with every whole parameter."""

from __future__ import annotations

import torch
from safetensors.torch import save_file
from zero_helpers import config, engine_losses, make_batches, make_model, run_ranks

import tiermem
from tiermem.engine.checkpoint_format import SafetensorsReader
from tiermem.engine.weight_sources import TorchFileSource

STEPS = 3


def _spy(cls, reads: list) -> None:
    original = cls.read_into

    def read_into(self, key, out, *, start=0):
        reads.append((key, start, start + out.numel()))
        return original(self, key, out, start=start)

    cls.read_into = read_into


def _owned(engine) -> dict[str, tuple[int, int]]:
    owned = {}
    for group in engine.groups:
        lay = group.layout
        for slot in lay.slots:
            s = max(lay.shard_start, slot.offset) - slot.offset
            e = min(lay.shard_end, slot.offset + slot.numel) - slot.offset
            if s < e:
                owned[slot.name] = (s, e)
    return owned


def _stage2(st_path: str, world: int) -> tuple[dict, list, dict]:
    """Stage 2 keeps whole parameters on every rank: each reads its shard, the all-gather
    fills the rest."""
    engine, *_ = tiermem.initialize(model=make_model(seed=1), config=config(stage=2, world=world))
    reads = []
    _spy(SafetensorsReader, reads)
    engine.load_weights(st_path)
    SafetensorsReader.read_into = _ORIGINAL
    full = {n: p.detach().clone() for n, p in engine.module.named_parameters()}
    owned = _owned(engine)
    engine.close()
    return owned, reads, full


_ORIGINAL = SafetensorsReader.read_into


def _rank(rank: int, world: int, st_path: str, pt_path: str) -> dict:
    stage2 = _stage2(st_path, world)
    cfg = config(stage=3, offload="cpu", offload_param="cpu", world=world)
    engine, *_ = tiermem.initialize(model=make_model(seed=1), config=cfg)
    owned = _owned(engine)
    st_reads, pt_reads = [], []
    _spy(SafetensorsReader, st_reads)
    engine.load_weights(st_path)
    _spy(TorchFileSource, pt_reads)
    engine.load_weights(pt_path)  # again, from the other format (no step taken yet)
    per = 8 // world
    mine = slice(rank * per, (rank + 1) * per)
    losses = []
    for idx, tgt in make_batches(STEPS):
        loss = engine(idx[mine], tgt[mine])
        engine.backward(loss)
        engine.step()
        value = loss.detach().reshape(1).clone()
        torch.distributed.all_reduce(value)
        losses.append(float(value) / world)
    engine.close()
    return {"owned": owned, "st": st_reads, "pt": pt_reads, "losses": losses, "stage2": stage2}


def _merged(reads):
    out: dict[str, list[tuple[int, int]]] = {}
    for key, a, b in sorted(reads):
        spans = out.setdefault(key, [])
        if spans and spans[-1][1] == a:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return out


def test_each_rank_reads_only_its_slices(tmp_path):
    sd = make_model(seed=5).state_dict()
    once = {k: v.clone() for k, v in sd.items() if k != "lm_head.weight"}
    save_file(once, tmp_path / "w.safetensors")
    torch.save(sd, tmp_path / "w.pt")
    results = run_ranks(_rank, str(tmp_path / "w.safetensors"), str(tmp_path / "w.pt"))
    total = sum(v.numel() for v in once.values())
    for res in results:
        for kind in ("st", "pt"):
            read = _merged(res[kind])
            # exactly the rank's own range of each parameter it owns a part of
            assert read == {k: [v] for k, v in res["owned"].items()}, kind
            assert sum(b - a for a, b in sum(read.values(), [])) <= total // 2 + 64
    for res in results:
        owned, reads, full = res["stage2"]
        assert _merged(reads) == {k: [v] for k, v in owned.items()}
        assert all(torch.equal(full[k], v) for k, v in once.items())
    # the ranks' slices tile every parameter
    for name, value in once.items():
        spans = sorted(r["owned"][name] for r in results if name in r["owned"])
        assert spans[0][0] == 0 and spans[-1][1] == value.numel(), name
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), name
    reference = make_model(seed=1)
    reference.load_state_dict(sd)
    expected = engine_losses(
        config(stage=3, offload="cpu", offload_param="cpu"), steps=STEPS, model=reference
    )
    assert max(abs(a - b) / b for a, b in zip(results[0]["losses"], expected, strict=True)) < 1e-5
