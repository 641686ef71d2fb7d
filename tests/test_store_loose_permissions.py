"""An existing swap directory others can write (0777) is tightened to be writable
by its owner only, and the store says so; one that is shared and sticky (like
/tmp) or another user's is refused, as are table, lock and swap files another
user owns."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore
from tiermem.store.nvme import LOCK_NAME, PERSISTENT_SWAP_NAME, TABLE_NAME

OTHER_UID = 4242


def mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def cfg_for(path, **kw) -> StoreConfig:
    return StoreConfig(host_bytes=1 << 20, nvme_paths=(str(path),), **kw)


@pytest.mark.parametrize("loose", [0o777, 0o770, 0o757])
def test_group_or_world_writable_directory_is_tightened_and_logged(tmp_path, caplog, loose):
    d = tmp_path / "swap"
    d.mkdir()
    os.chmod(d, loose)
    with caplog.at_level(logging.WARNING, logger="tiermem.store"):
        with TensorStore(cfg_for(d)) as store:
            store.register("w", 10, torch.float32)
    assert mode(d) == loose & ~0o022
    assert f"swap directory {d} had mode {loose:o}" in caplog.text


def test_shared_sticky_directory_is_refused(tmp_path):
    d = tmp_path / "public"
    d.mkdir()
    os.chmod(d, 0o1777)
    with pytest.raises(StoreError, match=f"swap directory {d} is shared"):
        TensorStore(cfg_for(d))
    assert mode(d) == 0o1777 and os.listdir(d) == []


def test_directory_of_another_user_is_refused(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, OTHER_UID, OTHER_UID)
    with pytest.raises(StoreError, match=f"swap directory {d} belongs to uid {OTHER_UID}"):
        TensorStore(cfg_for(d))
    assert os.listdir(d) == []


@pytest.mark.parametrize("name", [TABLE_NAME, LOCK_NAME, PERSISTENT_SWAP_NAME])
def test_store_files_of_another_user_are_refused(tmp_path, name):
    if os.getuid() != 0:
        pytest.skip("needs root to chown")
    d = tmp_path / "swap"
    with TensorStore(cfg_for(d, persistent=True)) as store:
        store.register("w", 10, torch.float32, init=torch.ones(10))
    os.chown(d / name, OTHER_UID, OTHER_UID)
    with pytest.raises(StoreError, match=f"{d / name} belongs to uid {OTHER_UID}"):
        TensorStore.open(cfg_for(d, persistent=True))
