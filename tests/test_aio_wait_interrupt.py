"""Ctrl-C gets through a wait on a request that is not completing: the wait runs in
timed slices, so SIGINT raises KeyboardInterrupt at once (issue 18, item 6). Before,
the untimed native wait held the main thread until the request completed.

The request is a read of a FIFO (io_uring, buffered): it completes only when the
test writes to the FIFO. Run in a subprocess so a hang is a timeout, not a stuck suite."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    import numpy as np
    from tiermem.aio import AioConfig, AioFile

    fifo = sys.argv[1]
    os.mkfifo(fifo)
    f = AioFile(fifo, "r+", config=AioConfig(backend="io_uring", direct="off"))
    buf = np.zeros(4096, dtype=np.uint8)
    req = f.submit_read(buf, 0)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    t0 = time.monotonic()
    try:
        req.wait()
        print("completed without an interrupt", flush=True)
        sys.exit(3)
    except KeyboardInterrupt:
        print(f"interrupted after {time.monotonic() - t0:.2f}s", flush=True)
    assert not req.done()
    # Let the read complete (the FIFO is open read-write in the engine) and close.
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(fd, b"x" * 4096)
    os.close(fd)
    try:
        req.wait()
    except OSError:
        pass
    f.close()
    print("closed", flush=True)
    """
)


def test_sigint_interrupts_a_blocked_wait(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "fifo")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.split("\n")
    interrupted = [ln for ln in lines if ln.startswith("interrupted after")]
    assert interrupted, proc.stdout + proc.stderr
    assert float(interrupted[0].split()[-1].rstrip("s")) < 3.0
    assert "closed" in lines
