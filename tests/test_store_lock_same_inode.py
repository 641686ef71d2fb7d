"""The swap file the store locks is the one it does I/O on.

The store locks a descriptor, then the I/O engine opens the file again. A
swap file replaced at its path in between (simulated by a wrapper around the
I/O engine's constructor that renames the locked file aside and puts another
in its place) is a StoreError naming the file; the new file is never written."""

from __future__ import annotations

import os

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore
from tiermem.store import nvme as nvme_mod


@pytest.mark.parametrize("persistent", [True, False])
def test_swap_file_replaced_between_lock_and_reopen_is_refused(tmp_path, monkeypatch, persistent):
    d = tmp_path / "swap"
    real = nvme_mod.AioFile
    replaced = []

    def replacing_aio_file(path, *args, **kwargs):
        target = d / (
            nvme_mod.PERSISTENT_SWAP_NAME if persistent else f"tiermem-{os.getpid()}-0.swap"
        )
        if not replaced:
            os.rename(target, d / "aside")
            target.write_bytes(b"")  # someone else's file, now at the path
            replaced.append(target)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nvme_mod, "AioFile", replacing_aio_file)
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(str(d),), persistent=persistent)
    with pytest.raises(StoreError, match="was replaced while the store opened it") as info:
        with TensorStore(cfg) as store:
            store.register("w", 1000, torch.float32, init=torch.ones(1000))
    assert str(replaced[0]) in str(info.value)
    assert replaced[0].stat().st_size == 0  # the replacement was never written to


def test_unreplaced_swap_file_opens(tmp_path):
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(str(tmp_path),), persistent=True)
    with TensorStore(cfg) as store:
        store.register("w", 1000, torch.float32, init=torch.ones(1000))
        stripe = store.tier(nvme_mod.TierKind.NVME).stripes[0]
        assert stripe.file.path == tmp_path / nvme_mod.PERSISTENT_SWAP_NAME  # named, not /proc
