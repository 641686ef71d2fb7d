"""Flat-buffer collectives over 2 gloo ranks, including the reduce-scatter fallback."""

from __future__ import annotations

import torch
from zero_helpers import run_ranks

from tiermem.engine.comm import Communicator


def _collectives(rank: int, world: int) -> dict:
    comm = Communicator()
    out: dict = {"rank": comm.rank, "world": comm.world_size}
    # all-gather: rank r contributes [r*10, r*10+1, r*10+2]
    flat = torch.zeros(6)
    comm.all_gather_flat(flat, torch.arange(3, dtype=torch.float32) + 10 * rank)
    out["gathered"] = flat.tolist()
    # in place: the shard is this rank's slice of the output buffer
    flat2 = torch.zeros(6, dtype=torch.bfloat16)
    flat2[3 * rank : 3 * rank + 3] = rank + 1
    comm.all_gather_flat(flat2, flat2[3 * rank : 3 * rank + 3])
    out["gathered_in_place"] = flat2.float().tolist()
    # reduce-scatter, native then forced fallback (all-reduce + slice)
    for native in (True, False):
        comm._native_reduce_scatter = native
        grads = torch.arange(6, dtype=torch.float32) * (rank + 1)
        shard = torch.empty(3)
        pending = comm.reduce_scatter_flat(shard, grads, average=True, async_op=True)
        pending.wait()
        out[f"reduce_scatter_{native}"] = shard.tolist()
    t = torch.full((2,), float(rank + 1))
    comm.all_reduce(t, average=True)
    out["all_reduce_mean"] = t.tolist()
    out["scalar_sum"] = comm.all_reduce_scalar(rank + 0.5)
    b = torch.full((2,), float(rank))
    comm.broadcast(b, src=1)
    out["broadcast"] = b.tolist()
    return out


def test_collectives_on_two_gloo_ranks():
    results = run_ranks(_collectives)
    for rank, res in enumerate(results):
        assert (res["rank"], res["world"]) == (rank, 2)
        assert res["gathered"] == [0, 1, 2, 10, 11, 12]
        assert res["gathered_in_place"] == [1, 1, 1, 2, 2, 2]
        # mean over ranks of arange(6)*(r+1) = arange(6)*1.5; this rank's half
        expected = [1.5 * i for i in range(3 * rank, 3 * rank + 3)]
        assert res["reduce_scatter_True"] == expected
        assert res["reduce_scatter_False"] == expected
        assert res["all_reduce_mean"] == [1.5, 1.5]
        assert res["scalar_sum"] == 2.0
        assert res["broadcast"] == [1.0, 1.0]
