"""AioFile.close and submits from other threads exclude each other: a submit that
arrives while close waits for outstanding requests is refused once the file is closed,
never handed to the C library after tm_file_close (issue 18, item 4)."""

from __future__ import annotations

import threading
import time

import pytest
from conftest import BACKENDS

from tiermem.aio import AioConfig, AioFile
from tiermem.buffers import HostBufferPool


@pytest.mark.parametrize("backend", BACKENDS)
def test_submit_during_close_is_refused(tmp_path, backend):
    pool = HostBufferPool(1 << 20)
    a, b = pool.allocate(64 << 10), pool.allocate(64 << 10)
    a.tensor().fill_(1)
    f = AioFile(tmp_path / "f.bin", "w+", config=AioConfig(backend=backend))
    f.inject_faults(refuse_submits=1 << 30)  # the first write stays in flight
    first = f.submit_write(a.tensor(), 0)
    closer = threading.Thread(target=f.close)
    closer.start()
    time.sleep(0.2)  # close is now waiting for `first`
    outcome: list[object] = []

    def late_submit():
        try:
            outcome.append(f.submit_write(b.tensor(), 1 << 20))
        except ValueError as exc:
            outcome.append(exc)

    submitter = threading.Thread(target=late_submit)
    submitter.start()
    time.sleep(0.2)
    f.inject_faults(refuse_submits=0)  # let `first` complete, and close finish
    closer.join(timeout=30)
    submitter.join(timeout=30)
    assert not closer.is_alive() and not submitter.is_alive()
    assert first.wait() == 64 << 10
    assert len(outcome) == 1
    assert isinstance(outcome[0], ValueError), f"submit during close was accepted: {outcome}"
    assert "closed AioFile" in str(outcome[0])
    assert (tmp_path / "f.bin").stat().st_size == 64 << 10  # the late write never ran
