"""A persistent store damaged while closed: a flipped byte in a swap extent is a
StoreCorruptionError naming the tensor and file at its first read; a flipped bit anywhere
in the allocation table is refused at reopen, naming the table. Nothing damaged is ever
returned as data.
"""

from __future__ import annotations

import os

import pytest
import torch

from tiermem.store import StoreConfig, StoreCorruptionError, StoreError, TensorStore, TierKind
from tiermem.store.nvme import TABLE_NAME, Extent

H = TierKind.HOST
N = 50_000  # fp32: 200 KB, over several 64 KiB stripe units


def cfg_for(tmp_path) -> StoreConfig:
    return StoreConfig(
        host_bytes=1 << 20,
        nvme_paths=(str(tmp_path / "a"), str(tmp_path / "b")),
        stripe_unit=64 << 10,
        persistent=True,
    )


def want(i: int) -> torch.Tensor:
    return torch.arange(N, dtype=torch.float32) * (i + 1)


@pytest.fixture
def closed_store(tmp_path):
    with TensorStore(cfg_for(tmp_path)) as store:
        for i in range(3):
            store.register(f"t{i}", N, torch.float32, init=want(i))
        extents = {f"t{i}": store.info(f"t{i}")["extent"] for i in range(3)}
        nvme = store.tier(TierKind.NVME)
        where = {}
        for name, (off, length) in extents.items():
            stripe, foff, _, n = nvme.pieces(Extent(off, length), 4 * N)[-1]  # data, not padding
            where[name] = (nvme.stripes[stripe].path, foff + n - 5)
    return where


def flip(path, pos: int, mask: int = 0x01) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, pos)[0] ^ mask]), pos)
    finally:
        os.close(fd)


def test_flipped_swap_byte_is_named_at_its_first_read(tmp_path, closed_store):
    path, pos = closed_store["t1"]
    flip(path, pos)
    with TensorStore.open(cfg_for(tmp_path)) as store:
        with pytest.raises(StoreCorruptionError) as err:
            store.fetch("t1", H).wait()
        msg = str(err.value)
        assert "tensor 't1'" in msg and str(path) in msg and "checksum mismatch" in msg
        for name in ("t0", "t2"):  # the others are intact
            assert torch.equal(store.fetch(name, H).wait(), want(int(name[1])))
            store.release(name)


def test_flipped_table_bit_is_refused_at_reopen(tmp_path, closed_store):
    table = tmp_path / "a" / TABLE_NAME
    pristine = table.read_bytes()
    for pos in range(len(pristine)):
        for mask in (0x01, 0x20):
            table.write_bytes(pristine)
            flip(table, pos, mask)
            what = f"bit {mask:#x} of byte {pos} ({pristine[pos : pos + 1]!r})"
            with pytest.raises(StoreError, match=str(table)) as err:
                TensorStore.open(cfg_for(tmp_path))
            msg = str(err.value)
            assert "checksum mismatch" in msg or "JSON" in msg or "expected format" in msg, what
    table.write_bytes(pristine)
    with TensorStore.open(cfg_for(tmp_path)) as store:
        for i in range(3):
            assert torch.equal(store.fetch(f"t{i}", H).wait(), want(i))
            store.release(f"t{i}")
