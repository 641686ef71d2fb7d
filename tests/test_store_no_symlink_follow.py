"""No symlink in a swap directory is ever followed: a swap, table or lock file (or the
table's temporary file) that is a symlink is a StoreError naming it, and its target is
neither read nor written. A planted symlink with a scratch file's name is skipped, and
never removed through, by the stale-file cleanup."""

from __future__ import annotations

import os

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore
from tiermem.store.nvme import LOCK_NAME, PERSISTENT_SWAP_NAME, TABLE_NAME

VICTIM = b"someone else's data\n" * 500


def persistent(d):
    return StoreConfig(host_bytes=1 << 20, nvme_paths=(d,), persistent=True)


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim"
    path.write_bytes(VICTIM)
    return path


@pytest.mark.parametrize("name", [TABLE_NAME, PERSISTENT_SWAP_NAME, LOCK_NAME])
def test_symlinked_file_of_an_existing_store_is_refused(tmp_path, victim, name):
    d = tmp_path / "swap"
    with TensorStore(persistent(d)) as store:
        store.register("w", 100, torch.float32, init=torch.ones(100))
    (d / name).unlink()
    (d / name).symlink_to(victim)
    with pytest.raises(StoreError, match=f"{d / name} is a symlink; tiermem never follows"):
        TensorStore(persistent(d))
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("name", [TABLE_NAME + ".tmp", PERSISTENT_SWAP_NAME, LOCK_NAME])
def test_symlink_planted_in_a_new_store_directory_is_refused(tmp_path, victim, name):
    d = tmp_path / "swap"
    d.mkdir(mode=0o700)
    (d / name).symlink_to(victim)
    with pytest.raises(StoreError, match=f"{d / name} is a symlink"):
        with TensorStore(persistent(d)) as store:
            store.register("w", 100, torch.float32, init=torch.ones(100))
            store.write_back()
    assert victim.read_bytes() == VICTIM


def test_scratch_name_symlink_is_skipped_not_followed(tmp_path, victim):
    d = tmp_path / "swap"
    d.mkdir(mode=0o700)
    planted = d / f"tiermem-{os.getpid()}-0.swap"  # the name the store would use first
    planted.symlink_to(victim)
    dead = d / "tiermem-999999999-0.swap"  # looks stale
    dead.symlink_to(victim)
    with TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(d,))) as store:
        store.register("w", 1 << 12, torch.float32, init=torch.ones(1 << 12))
        store.write_back()
        assert sorted(os.listdir(d)) == sorted(
            [planted.name, dead.name, f"tiermem-{os.getpid()}-1.swap"]
        )
    assert victim.read_bytes() == VICTIM
    assert planted.is_symlink() and dead.is_symlink()
