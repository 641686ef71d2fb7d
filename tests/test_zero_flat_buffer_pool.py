"""Stage 3 gathers that copy reuse freed flat buffers on the CPU, within a byte cap."""

from __future__ import annotations

import torch
from zero_helpers import config, engine_losses, max_rel_diff, reference_losses

from tiermem.engine.flat_buffers import FlatBufferPool, storage_users

CPU = torch.device("cpu")


def test_a_freed_buffer_of_the_same_size_is_handed_out_again():
    pool = FlatBufferPool(cap_bytes=1 << 20)
    a = pool.take(1000, torch.float32, CPU)
    pool.give(a, users=storage_users(a))
    assert pool.cached_bytes == 4000
    b = pool.take(1000, torch.float32, CPU)
    assert b.data_ptr() == a.data_ptr() and pool.reused == 1 and pool.cached_bytes == 0
    c = pool.take(1000, torch.bfloat16, CPU)  # another dtype: a new buffer
    assert c.data_ptr() != a.data_ptr() and c.dtype == torch.bfloat16 and c.numel() == 1000


def test_the_cap_bounds_what_is_kept():
    pool = FlatBufferPool(cap_bytes=6000)
    first, second = pool.take(1000, torch.float32, CPU), pool.take(1000, torch.float32, CPU)
    pool.give(first, users=storage_users(first))
    pool.give(second, users=storage_users(second))  # 8000 bytes would exceed the cap: dropped
    assert pool.cached_bytes == 4000
    assert pool.take(1000, torch.float32, CPU).data_ptr() == first.data_ptr()
    assert pool.take(1000, torch.float32, CPU).data_ptr() != first.data_ptr()
    pool.give(first, users=storage_users(first))
    pool.clear()
    assert pool.cached_bytes == 0 and pool.reused == 1


def test_a_buffer_still_read_through_a_view_is_not_kept():
    # autograd saves weight.t() for F.linear's backward: a view of the gathered buffer
    pool = FlatBufferPool(cap_bytes=1 << 20)
    buf = pool.take(1000, torch.float32, CPU)
    users = storage_users(buf)
    weight = torch.nn.Parameter(torch.empty(0))
    weight.data = buf[:12].view(3, 4)
    out = torch.nn.functional.linear(torch.randn(2, 4, requires_grad=True), weight)
    weight.data = torch.empty(0)  # the group is freed
    pool.give(buf, users=users)
    assert pool.cached_bytes == 0  # the graph still reads it: dropped, never reused
    del out
    pool.give(buf, users=users)
    assert pool.cached_bytes == 4000


def test_gathers_reuse_buffers_and_train_like_plain_torch(tmp_path):
    # one parameter buffer: most groups cannot compute on the store's buffer and copy
    def section(device):
        out = {"device": device, "buffer_count": 1}
        if device == "nvme":
            out["nvme_path"] = str(tmp_path)
        return out

    cfg = config(
        stage=3,
        extra={
            "zero_optimization": {
                "offload_param": section("nvme"),
                "offload_optimizer": section("cpu"),
            }
        },
    )
    groups = []
    losses = engine_losses(cfg, after_step=lambda engine, step: groups.append(engine.groups[0]))
    pool = groups[-1].buffers
    assert pool is not None and pool.reused > 0
    assert max_rel_diff(losses, reference_losses()) <= 1e-5
