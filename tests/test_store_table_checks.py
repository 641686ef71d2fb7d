"""Reopening a persistent store checks its table before trusting it: extents
aligned, positive, inside the swap space and not overlapping, ``nbytes <=
length``, a well-formed CRC. Each bad record is refused naming the tensor (the
table's own CRC is made valid again, as code writing a table would). A record
without a CRC is accepted with a warning naming the tensor."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore, TierKind
from tiermem.store import nvme as nvme_mod

UNIT = 64 << 10


def cfg_for(tmp_path, **kw) -> StoreConfig:
    return StoreConfig(
        host_bytes=1 << 20,
        nvme_paths=(str(tmp_path / "swap"),),
        stripe_unit=UNIT,
        persistent=True,
        **kw,
    )


def closed_store(tmp_path) -> dict:
    with TensorStore(cfg_for(tmp_path)) as store:
        store.register("a", 3000, torch.float32, init=torch.full((3000,), 1.0))
        store.register("b", 5000, torch.float32, init=torch.full((5000,), 2.0))
    return nvme_mod.read_table(tmp_path / "swap")


def rewrite(tmp_path, table: dict) -> None:
    table = {k: v for k, v in table.items() if k != "crc32c"}
    nvme_mod.write_table_atomic(tmp_path / "swap", table)  # with a valid table CRC


def _set(field, value):
    def edit(table):
        table["tensors"]["b"][field] = value

    return edit


def _overlap(table):
    table["tensors"]["b"]["offset"] = table["tensors"]["a"]["offset"]


CASES = {
    "unaligned offset": (_set("offset", 12288 + 100), "multiples of 4096"),
    "negative offset": (_set("offset", -4096), "multiples of 4096"),
    "zero length": (_set("length", 0), "length positive"),
    "unaligned length": (_set("length", 4097), "multiples of 4096"),
    "past the end": (_set("offset", 1 << 40), "ends past the swap space"),
    "overlap": (_overlap, "overlaps another tensor"),
    "string offset": (_set("offset", "0"), "must be integers"),
    "nbytes over length": (_set("numel", 10**6), "do not fit its extent"),
    "bad crc": (_set("crc", "abc"), "is not a CRC32C"),
    "bad numel": (_set("numel", -1), "numel -1"),
    "bad dtype": (_set("dtype", "int64"), "dtype"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_record_is_refused_naming_the_tensor(tmp_path, case):
    table = closed_store(tmp_path)
    edit, expected = CASES[case]
    edit(table)
    rewrite(tmp_path, table)
    with pytest.raises(StoreError) as info:
        TensorStore.open(cfg_for(tmp_path))
    message = str(info.value)
    assert "'b'" in message and expected in message, message
    # refused without committing anything over the table
    assert nvme_mod.read_table(tmp_path / "swap")["tensors"]["b"] == table["tensors"]["b"]


def test_capacity_that_is_not_whole_stripe_units_is_refused(tmp_path):
    table = closed_store(tmp_path)
    table["capacity"] += 4096
    rewrite(tmp_path, table)
    with pytest.raises(StoreError, match="capacity .* is not a multiple"):
        TensorStore.open(cfg_for(tmp_path))


def test_a_record_without_crc_is_read_with_a_warning_naming_it(tmp_path):
    table = closed_store(tmp_path)
    table["tensors"]["b"]["crc"] = None
    rewrite(tmp_path, table)
    with pytest.warns(UserWarning, match=r"no checksum recorded for tensor\(s\) 'b'"):
        store = TensorStore.open(cfg_for(tmp_path))
    with store:
        got = store.fetch("b", TierKind.HOST).wait()
        assert torch.equal(got, torch.full((5000,), 2.0))
        store.release("b")
    # with checksums off nothing is lost by a missing CRC: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TensorStore.open(cfg_for(tmp_path, checksum=False)).close()


def test_an_intact_table_reopens(tmp_path):
    closed_store(tmp_path)
    with TensorStore.open(cfg_for(tmp_path)) as store:
        assert torch.equal(store.fetch("a", TierKind.HOST).wait(), torch.full((3000,), 1.0))
        store.release("a")
    assert json.loads((tmp_path / "swap" / nvme_mod.TABLE_NAME).read_text())["tensors"]
