"""A forked child that closes an inherited store leaves the parent's swap files alone."""

from __future__ import annotations

import os

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind


def test_child_close_keeps_parent_files(tmp_path):
    cfg = StoreConfig(
        device_bytes=1 << 20, host_bytes=1 << 20, nvme_paths=(tmp_path / "s0",), prefetch_bytes=0
    )
    want = torch.arange(1 << 18, dtype=torch.float32)
    with TensorStore(cfg) as store:
        store.register("w", want.numel(), torch.float32, home=TierKind.NVME, init=want)
        files = sorted(p.name for p in (tmp_path / "s0").iterdir())
        assert any(f.endswith(".swap") for f in files)
        pid = os.fork()
        if pid == 0:  # the child: close what it inherited, then leave at once
            code = 0
            try:
                store.close()
            except BaseException:
                code = 3
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == files
        got = store.fetch("w", TierKind.HOST).wait()
        assert torch.equal(got, want)
        store.release("w")
