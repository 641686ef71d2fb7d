"""Section 2 of bench/gpu_check.py with the CUDA steps skipped: the NVMe -> host legs and the
chunked pipelines, checked byte for byte."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _gpu_check_transfer import (  # noqa: E402
    MIB,
    TransferConfig,
    TransferRun,
    fill_pattern,
    pipeline_read,
    pipeline_write,
)

from tiermem.aio import AioFile  # noqa: E402
from tiermem.buffers import HostBufferPool  # noqa: E402


def test_cpu_legs_measure_and_verify(tmp_path):
    cfg = TransferConfig(
        directory=tmp_path / "nvme",
        nbytes=6 * MIB + 12 * 4096,  # the last chunk is a partial one
        chunk_bytes=1 * MIB,
        buffers=3,
        use_cuda=False,
    )
    out = TransferRun(cfg, deadline=time.monotonic() + 600).run()
    rates = out["rates_gbps"]
    assert set(rates) == {"nvme_write", "nvme_read", "nvme_to_host", "host_to_nvme"}
    assert set(rates["nvme_read"]) == {"tiermem", "python", "torch.load"}
    assert set(rates["nvme_to_host"]) == {"tiermem", "torch"}
    assert all(r > 0 for tools in rates.values() for r in tools.values())
    facts = out["facts"]
    assert facts["pinned"] is False
    for leg in ("nvme_read", "nvme_to_host", "host_to_nvme"):
        assert facts[f"verified_{leg}"] is True
    assert any("no CUDA" in s for s in out["skipped"])
    assert list((tmp_path / "nvme").iterdir()) == []  # its files are removed


def test_spent_budget_skips_the_baselines(tmp_path):
    cfg = TransferConfig(directory=tmp_path, nbytes=MIB, chunk_bytes=MIB // 4, use_cuda=False)
    out = TransferRun(cfg, deadline=time.monotonic() - 1).run()
    assert set(out["rates_gbps"]) == {"nvme_write", "nvme_read"}
    assert set(out["rates_gbps"]["nvme_read"]) == {"tiermem"}  # measured before any check
    assert len(out["skipped"]) >= 2


@pytest.mark.parametrize("chunks,buffers", [(7, 3), (2, 4), (1, 2)])
def test_pipelines_round_trip_every_byte(tmp_path, chunks, buffers):
    chunk = 64 * 1024
    n = chunks * chunk - 4096
    src = torch.empty(n, dtype=torch.uint8)
    fill_pattern(src, seed=chunks)
    pool = HostBufferPool(buffers * chunk, pin=False)
    bufs = [pool.allocate(chunk) for _ in range(buffers)]
    path = tmp_path / "pipe.bin"
    with AioFile(path, "w+") as f:
        pipeline_write(f, bufs, src, chunk)
        assert path.read_bytes() == src.numpy().tobytes()
        back = torch.zeros(n, dtype=torch.uint8)
        pipeline_read(f, bufs, back, chunk)
    assert torch.equal(back, src)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ValueError, match="nbytes"):
        TransferConfig(directory=tmp_path, nbytes=1000)
    with pytest.raises(ValueError, match="buffers"):
        TransferConfig(directory=tmp_path, buffers=1)
