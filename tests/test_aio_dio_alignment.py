"""O_DIRECT only where the filesystem's direct I/O alignment (statx STATX_DIOALIGN) fits
tiermem's 4 KiB buffers; a filesystem that needs more gets buffered I/O and the reason
says why (issue 18, item 14). TIERMEM_AIO_DIO_ALIGN stands in for the kernel's answer."""

from __future__ import annotations

import numpy as np
import pytest

from tiermem.aio import AioConfig, AioFile


def test_larger_alignment_falls_back_to_buffered(tmp_path, monkeypatch):
    monkeypatch.setenv("TIERMEM_AIO_DIO_ALIGN", "16384:16384")
    data = np.arange(1 << 16, dtype=np.uint8)
    with AioFile(tmp_path / "f.bin", "w+") as f:
        assert not f.direct
        assert "16384-byte" in f.reason and "buffered" in f.reason
        f.write(data, 0)
        back = np.zeros_like(data)
        f.read_into(back, 0)
        assert np.array_equal(back, data)
    with pytest.raises(OSError, match="direct on"):
        AioFile(tmp_path / "f.bin", "r+", config=AioConfig(direct="on"))


def test_kernel_alignment_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("TIERMEM_AIO_DIO_ALIGN", raising=False)
    with AioFile(tmp_path / "f.bin", "w+") as f:
        if f.direct:  # ext4, xfs...: the reason says where the alignment came from
            assert "statx" in f.reason
