"""A process that leaves stores, engines and files open (NVMe offload, writes in
flight) exits cleanly (issue 18, item 8).

The SIGSEGV at exit had this cause: cffi unloads the native library when its handle is
freed, which interpreter finalization does while the I/O engine threads of files never
closed (and the Adam and I/O worker threads) are parked inside the library's code; a
thread woken after that (an I/O completion landing in the window before the process
ends) returns into unmapped memory. The library is now loaded with RTLD_NODELETE.
The first test makes the window certain by asking for the unload explicitly."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent

UNLOAD = textwrap.dedent(
    """
    import os, sys, time
    from tiermem._native import native
    from tiermem.aio import AioConfig, AioFile
    from tiermem.buffers import HostBufferPool

    pool = HostBufferPool(1 << 30)
    f = AioFile(sys.argv[1], "w+", config=AioConfig(backend=sys.argv[2], queue_depth=2, threads=1))
    buf = pool.allocate(256 << 20)
    req = f.submit_write(buf.tensor(), 0)
    native.ffi.dlclose(native.lib)  # what finalization does once the handle is freed
    time.sleep(1.0)                 # the write completes and wakes the engine thread
    print("survived", flush=True)
    os._exit(0)
    """
)

LEAVE_OPEN = textwrap.dedent(
    """
    import os, sys
    import torch
    sys.path.insert(0, sys.argv[2])
    import tiermem
    from tiermem.aio import AioFile
    from tiermem.buffers import HostBufferPool
    from tiermem.store import StoreConfig, TensorStore
    from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps

    root = sys.argv[1]
    kept = []
    for i in range(3):  # stores with write-behind in flight, never closed
        cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(os.path.join(root, f"s{i}"),),
                          prefetch_bytes=0)
        store = TensorStore(cfg)
        for j in range(4):
            store.register(f"t{j}", 100_000, torch.float32, init=torch.full((100_000,), j))
        kept.append(store)
    for i in range(2):  # engines with parameters and optimizer state on NVMe, never closed
        engine, *_ = tiermem.initialize(
            model=make_model(seed=i), config=nvme_offload_config(os.path.join(root, f"e{i}"))
        )
        train_steps(engine, make_batches(1))
        kept.append(engine)
    pool = HostBufferPool(1 << 28)
    f = AioFile(os.path.join(root, "inflight.bin"), "w+")
    buf = pool.allocate(128 << 20)
    kept += [f, buf, f.submit_write(buf.tensor(), 0)]  # still writing at exit
    print("leaving", flush=True)
    """
)


@pytest.mark.parametrize("backend", ["threads", "io_uring"])
def test_library_unload_with_live_engine_threads(tmp_path, backend):
    proc = subprocess.run(
        [sys.executable, "-c", UNLOAD, str(tmp_path / "f.bin"), backend],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"exit status {proc.returncode}: {proc.stderr[-2000:]}"
    assert "survived" in proc.stdout


def test_exit_with_stores_engines_and_files_left_open(tmp_path):
    for attempt in range(3):
        root = tmp_path / f"run{attempt}"
        root.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", LEAVE_OPEN, str(root), str(TESTS_DIR)],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, (
            f"attempt {attempt}: exit status {proc.returncode}\n{proc.stderr[-3000:]}"
        )
        assert "leaving" in proc.stdout
