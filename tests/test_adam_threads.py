"""Thread count changes nothing in the result; the pool survives resize and fork."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import torch

from tiermem import adam


def step_with(threads, n=300_007, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p, m, g = (torch.randn(n, generator=gen) for _ in range(3))
    v = torch.rand(n, generator=gen)
    out = torch.empty(n, dtype=torch.float16)
    adam.adam_step(p, m, v, g, step=4, weight_decay=0.01, param_out=out, threads=threads)
    return p, m, v, out


def test_any_thread_count_gives_the_same_bits():
    single = step_with(1)
    # 7 > the pool on this machine: several chunks per thread
    for threads in (2, 3, 7, 0):
        assert all(torch.equal(a, b) for a, b in zip(step_with(threads), single, strict=True))


def test_resize_the_pool():
    old = adam.get_num_threads()
    try:
        adam.set_num_threads(3)
        assert adam.get_num_threads() == 3
        assert all(torch.equal(a, b) for a, b in zip(step_with(0), step_with(1), strict=True))
        with pytest.raises(ValueError):
            adam.set_num_threads(-1)
    finally:
        adam.set_num_threads(0)
    assert adam.get_num_threads() == old


def numpy_step(threads):
    """A step on numpy buffers through the raw API (no torch ops: see below)."""
    rng = np.random.default_rng(5)
    p, m, g = (rng.standard_normal(200_003, dtype=np.float32) for _ in range(3))
    v = np.abs(m)
    ptr = [a.ctypes.data for a in (p, m, v, g)]
    adam.adam_step_raw(p.size, *ptr, grad_dtype="float32", step=2, threads=threads)
    return p.tobytes() + m.tobytes() + v.tobytes()


def _child(queue):
    queue.put(numpy_step(2))


def test_pool_works_in_a_forked_child():
    """After fork only the forking thread exists; the child must build a new pool.

    [Note: the child runs no torch op: torch's own OpenMP pool hangs in a forked
    child once the parent has used it, which is torch's limitation, not ours.]
    """
    expect = numpy_step(2)  # the parent's pool now has live workers
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    got = queue.get(timeout=60)
    proc.join(60)
    assert proc.exitcode == 0
    assert got == expect
