"""The store's swap files use O_DIRECT wherever a plain file on the same filesystem can.

The store opens each swap file through the descriptor it locked
(/proc/self/fd/N); the direct descriptor must be a reopen of that inode, not an
O_NOFOLLOW open of the magic link (which fails with ELOOP and silently fell
back to buffered I/O).
"""

from __future__ import annotations

import os

import torch

from tiermem.aio import AioConfig, AioFile
from tiermem.store import StoreConfig, TensorStore, TierKind


def test_swap_files_direct_like_a_plain_file(tmp_path):
    with AioFile(tmp_path / "probe.bin", "w+") as probe:
        plain_direct, plain_reason = probe.direct, probe.reason
    cfg = StoreConfig(
        device_bytes=1 << 20, host_bytes=1 << 20, nvme_paths=(tmp_path / "s0",), prefetch_bytes=0
    )
    with TensorStore(cfg) as store:
        store.register("w", 4096, torch.float32, home=TierKind.NVME, init=torch.ones(4096))
        stripe = store._nvme.stripes[0].file
        assert stripe.direct == plain_direct, (stripe.reason, plain_reason)


def test_direct_open_through_proc_fd(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"\0" * 8192)
    fd = os.open(path, os.O_RDWR)
    try:
        with AioFile(f"/proc/self/fd/{fd}", "r+") as f, AioFile(path, "r+") as plain:
            assert f.direct == plain.direct, (f.reason, plain.reason)
            if plain.direct:  # the same open must also work when O_DIRECT is required
                with AioFile(f"/proc/self/fd/{fd}", "r+", config=AioConfig(direct="on")) as g:
                    assert g.direct
    finally:
        os.close(fd)
