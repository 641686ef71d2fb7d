"""A flipped byte on disk is detected on read, naming the tensor and file."""

from __future__ import annotations

import os

import pytest
import torch

from tiermem.store import Residency, StoreConfig, StoreCorruptionError, TensorStore, TierKind
from tiermem.store.nvme import Extent

H, D = TierKind.HOST, TierKind.DEVICE
N = 100_000  # fp32: 400 KB, spans several 64 KiB stripe units


def flip_byte(store, name, at):
    nvme = store.tier(TierKind.NVME)
    off, length = store.info(name)["extent"]
    pieces = nvme.pieces(Extent(off, length), length)
    for stripe, foff, boff, n in pieces:
        if boff <= at < boff + n:
            path = nvme.stripes[stripe].path
            fd = os.open(path, os.O_RDWR)
            try:
                pos = foff + at - boff
                b = os.pread(fd, 1, pos)
                os.pwrite(fd, bytes([b[0] ^ 0x40]), pos)
                os.fsync(fd)
            finally:
                os.close(fd)
            return path
    raise AssertionError("offset outside the extent")


def evict_all(store, name):
    for t in (D, H):
        assert store.info(name)["states"][t] in (Residency.CLEAN, Residency.ABSENT)
    store.register("filler", 2 * N, torch.float32)  # pushes everything else out of HOST
    store.drop("filler")
    assert store.info(name)["states"][H] is Residency.ABSENT


@pytest.mark.parametrize("target", [H, D])
def test_flipped_byte_raises_naming_tensor_and_file(tmp_path, target):
    cfg = StoreConfig(
        device_bytes=1 << 20,
        host_bytes=1 << 20,
        nvme_paths=(tmp_path / "a", tmp_path / "b"),
        stripe_unit=64 << 10,
    )
    want = torch.arange(N, dtype=torch.float32)
    with TensorStore(cfg) as store:
        store.register("w", N, torch.float32, init=want)
        store.register("ok", N, torch.float32, init=want)
        evict_all(store, "w")
        path = flip_byte(store, "w", 300_001)
        with pytest.raises(StoreCorruptionError) as err:
            store.fetch("w", target).wait()
        msg = str(err.value)
        assert "tensor 'w'" in msg and str(path) in msg and "checksum mismatch" in msg
        # nothing half-loaded stays behind; the store keeps working
        assert store.info("w")["states"][target] is Residency.ABSENT
        assert store.info("w")["states"][H] is Residency.ABSENT
        assert torch.equal(store.fetch("ok", target).wait().cpu(), want)
        store.release("ok")
        with pytest.raises(StoreCorruptionError):  # still corrupt: detected again
            store.fetch("w", H).wait()


def test_without_checksum_the_flip_goes_unnoticed(tmp_path):
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(tmp_path / "a",), checksum=False)
    want = torch.arange(N, dtype=torch.float32)
    with TensorStore(cfg) as store:
        store.register("w", N, torch.float32, init=want)
        assert store.info("w")["crc"] is None
        evict_all(store, "w")
        flip_byte(store, "w", 8)
        got = store.fetch("w", H).wait()
        assert not torch.equal(got, want)
        assert torch.equal(got[3:], want[3:])
