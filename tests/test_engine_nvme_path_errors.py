"""An ``nvme_path`` that cannot hold swap files is a ConfigError naming the key and the path.

Not a directory (a file, a path under a file, a symlink to a file), a
dangling symlink, a read-only filesystem: refused at ``initialize`` before
any file is made. A missing path is created with mode 0700 (as the swap
directories below it are); a symlink to a private directory is followed
to it; one into a directory others can write is refused by the store.

[Note: the tests run as root, for whom a chmod 0500 directory is writable
(and the engine then really can write there), so "unwritable" is tested
with a read-only tmpfs mount, which binds root too.]
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
import torch
from conftest import _mount, _umount
from torch import nn

import tiermem
from tiermem.engine.config import ConfigError
from tiermem.store import StoreError

OPT_KEY = "zero_optimization.offload_optimizer.nvme_path"
PARAM_KEY = "zero_optimization.offload_param.nvme_path"


def config(param_path: str, opt_path: str) -> dict:
    return {
        "train_micro_batch_size_per_gpu": 2,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
        "zero_optimization": {
            "stage": 3,
            "offload_param": {"device": "nvme", "nvme_path": param_path},
            "offload_optimizer": {"device": "nvme", "nvme_path": opt_path},
        },
    }


def train_one_step(path: str, opt_path: str | None = None) -> None:
    engine, *_ = tiermem.initialize(model=nn.Linear(4, 4), config=config(path, opt_path or path))
    try:
        loss = engine(torch.randn(2, 4)).sum()
        engine.backward(loss)
        engine.step()
    finally:
        engine.close()


@pytest.fixture
def read_only_dir(tmp_path: Path):
    target = tmp_path / f"ro-{uuid.uuid4().hex[:8]}"
    why = _mount("tmpfs", target, "ro,size=1m")
    if why:
        pytest.skip(f"needs a read-only tmpfs mount: {why}")
    yield target
    _umount(target)


def layouts(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (nvme_path, expected text in the error)."""
    (tmp_path / "file").write_text("x")
    (tmp_path / "link_to_file").symlink_to(tmp_path / "file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    return {
        "file": (str(tmp_path / "file"), "exists and is not a directory"),
        "under_file": (str(tmp_path / "file" / "sub"), "is not a directory"),
        "link_to_file": (str(tmp_path / "link_to_file"), "exists and is not a directory"),
        "dangling": (str(tmp_path / "dangling"), "which does not exist"),
    }


@pytest.mark.parametrize("case", ["file", "under_file", "link_to_file", "dangling"])
@pytest.mark.parametrize("which", ["param", "optimizer"])
def test_unusable_path_names_the_key_and_the_path(tmp_path, case, which):
    bad, expected = layouts(tmp_path)[case]
    good = str(tmp_path / "good")
    args = (bad, good) if which == "param" else (good, bad)
    with pytest.raises(ConfigError) as info:
        train_one_step(*args)
    assert info.value.path == (PARAM_KEY if which == "param" else OPT_KEY)
    assert bad in str(info.value) and expected in str(info.value)


@pytest.mark.parametrize("sub", ["", "sub"])
def test_read_only_filesystem_is_refused_by_name(read_only_dir, sub):
    path = str(read_only_dir / sub) if sub else str(read_only_dir)
    with pytest.raises(ConfigError) as info:
        train_one_step(path)
    assert info.value.path == PARAM_KEY
    assert path in str(info.value) and "read-only filesystem" in str(info.value)


def test_missing_path_is_created_private(tmp_path):
    path = tmp_path / "a" / "b"
    train_one_step(str(path))
    for d in (tmp_path / "a", path, path / "tiermem_rank0"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d
    assert list((path / "tiermem_rank0").iterdir()) == []  # swap files removed at close


def test_symlink_to_a_private_directory_is_used(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    train_one_step(str(tmp_path / "link"))
    assert (real / "tiermem_rank0").is_dir()


def test_symlink_into_a_world_writable_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # no sticky bit: anyone could swap the target
    (shared / "priv").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(shared / "priv")
    with pytest.raises(StoreError, match=r"is a symlink to .*which other users can write"):
        train_one_step(str(tmp_path / "link"))
