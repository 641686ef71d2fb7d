"""A failed request leaves the file usable: the next requests complete.

Regression: a request that failed mid-way stayed on the engine's pending list
after its waiter had freed it; the next request on the file then followed the
freed entry and could hang forever. The race needs the waiter to free the
request before the engine thread looks at the list again, so it is repeated
many times, in a subprocess with a timeout so that a hang fails the test.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

BACKENDS = ["io_uring", "libaio", "threads"]

SCRIPT = textwrap.dedent(
    """
    import errno, sys
    from tiermem.aio import AioConfig, AioFile
    from tiermem.buffers import HostBufferPool

    backend, path = sys.argv[1], sys.argv[2]
    pool = HostBufferPool(1 << 20, pin=False)
    buf = pool.allocate(8 * 4096).tensor()
    cfg = AioConfig(backend=backend, block_size=4096, queue_depth=1)
    with AioFile(path, "w+", config=cfg) as f:
        for i in range(300):
            f.inject_faults(fail_nth=2 + i % 5, errno=errno.EIO)
            try:
                f.write(buf, 0)
            except OSError as exc:
                assert exc.errno == errno.EIO, exc
            else:
                raise AssertionError("injected EIO not reported")
            assert f.write(buf, 4096) == buf.numel()
            assert f.read_into(buf, 0) == buf.numel()
    print("ok")
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_file_is_reusable_after_many_failed_requests(tmp_path, backend):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, backend, str(tmp_path / "f.bin")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
