"""Without a process group the communicator is one rank and its collectives are copies."""

from __future__ import annotations

import pytest
import torch

from tiermem.engine.comm import Communicator


def test_world_of_one_without_process_group():
    comm = Communicator()
    assert (comm.rank, comm.world_size) == (0, 1)
    shard = torch.arange(6, dtype=torch.float32)
    flat = torch.zeros(6)
    comm.all_gather_flat(flat, shard).wait()
    assert torch.equal(flat, shard)

    out = torch.empty(6)
    grads = torch.full((6,), 3.0)
    comm.reduce_scatter_flat(out, grads, average=True).wait()
    assert torch.equal(out, torch.full((6,), 3.0))  # the mean over one rank is the value

    t = torch.ones(3)
    comm.all_reduce(t, average=True)
    assert torch.equal(t, torch.ones(3))
    assert comm.all_reduce_scalar(2.5) == 2.5
    assert comm.shard_bounds(10) == (0, 10)


def test_all_gather_casts_shard_to_flat_dtype():
    comm = Communicator()
    flat = torch.zeros(4, dtype=torch.bfloat16)
    comm.all_gather_flat(flat, torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert flat.dtype == torch.bfloat16 and flat.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_size_mismatch_is_an_error_naming_the_sizes():
    comm = Communicator()
    with pytest.raises(ValueError, match="5 elements"):
        comm.all_gather_flat(torch.zeros(5), torch.zeros(4))
