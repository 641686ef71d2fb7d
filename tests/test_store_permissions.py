"""Swap directories are 0700, files 0600; symlinks into shared directories are refused."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from tiermem.store import StoreConfig, StoreError, TensorStore, TierKind


def mode(p):
    return stat.S_IMODE(os.lstat(p).st_mode)


def test_created_directories_and_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        swap = tmp_path / "deep" / "er" / "swap"
        cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(swap,), persistent=True)
        with TensorStore(cfg) as store:
            store.register("w", 1000, torch.float32)
            store.write_back()
            for d in (tmp_path / "deep", tmp_path / "deep" / "er", swap):
                assert mode(d) == 0o700, d
            files = sorted(os.listdir(swap))
            assert files == ["tiermem-table.json", "tiermem.lock", "tiermem.swap"]
            for f in files:
                assert mode(swap / f) == 0o600, f
    finally:
        os.umask(old)


def test_existing_directory_is_kept_as_is(tmp_path):
    d = tmp_path / "mine"
    d.mkdir(mode=0o750)
    os.chmod(d, 0o750)
    with TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(d,))) as store:
        store.register("w", 10, torch.float32)
        (swap,) = os.listdir(d)
        assert mode(d / swap) == 0o600
    assert mode(d) == 0o750


def test_symlink_into_world_writable_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "swap").mkdir()
    link = tmp_path / "link"
    link.symlink_to(shared / "swap")
    with pytest.raises(StoreError, match=f"{link} is a symlink to .*inside {shared} which other"):
        TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(link,)))
    # a parent that is such a symlink is refused too
    with pytest.raises(StoreError, match=f"{link} is a symlink"):
        TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(link / "sub",)))
    assert os.listdir(shared / "swap") == []


def test_symlink_to_a_world_writable_sticky_directory_is_refused(tmp_path):
    public = tmp_path / "public"
    public.mkdir()
    os.chmod(public, 0o1777)  # like /tmp itself
    link = tmp_path / "link"
    link.symlink_to(public)
    with pytest.raises(StoreError, match=f"inside {public} which other users can write"):
        TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(link,)))
    # our own directory inside a sticky one is fine (as under /tmp)
    (public / "mine").mkdir(mode=0o700)
    link2 = tmp_path / "link2"
    link2.symlink_to(public / "mine")
    with TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(link2,))) as store:
        store.register("w", 10, torch.float32)


def test_symlink_to_private_directory_is_fine(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(private)
    with TensorStore(StoreConfig(host_bytes=1 << 20, nvme_paths=(link / "s",))) as store:
        store.register("w", 10, torch.float32, init=torch.ones(10))
        assert torch.equal(store.fetch("w", TierKind.HOST).wait(), torch.ones(10))
        assert len(os.listdir(private / "s")) == 1
