"""When the kernel refuses submissions (EAGAIN/EBUSY, injected), the engine backs off
and retries, with nothing else in flight: the transfer completes byte-exact and close
returns (issue 18, item 6). Before, io_uring waited for a completion that could not
come and the write, and then close, hung."""

from __future__ import annotations

import errno

import numpy as np
import pytest
from conftest import BACKENDS

from tiermem.aio import AioConfig, AioFile


@pytest.mark.parametrize("refusal", [errno.EAGAIN, errno.EBUSY])
@pytest.mark.parametrize("backend", BACKENDS)
def test_refused_submissions_are_retried(tmp_path, backend, refusal):
    data = np.random.default_rng(0).integers(0, 256, 256 << 10, dtype=np.uint8)
    with AioFile(tmp_path / "f.bin", "w+", config=AioConfig(backend=backend)) as f:
        f.inject_faults(refuse_submits=6, refuse_errno=refusal)
        assert f.write(data, 0) == data.nbytes
        back = np.zeros_like(data)
        assert f.read_into(back, 0) == data.nbytes
        assert np.array_equal(back, data)
        assert f.inflight == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_refusal_with_an_error_fails_the_request(tmp_path, backend):
    data = np.ones(64 << 10, dtype=np.uint8)
    with AioFile(tmp_path / "f.bin", "w+", config=AioConfig(backend=backend)) as f:
        f.inject_faults(refuse_submits=1, refuse_errno=errno.EIO)
        with pytest.raises(OSError) as ei:
            f.write(data, 0)
        assert ei.value.errno == errno.EIO
        assert f.write(data, 0) == data.nbytes  # the file works afterwards
