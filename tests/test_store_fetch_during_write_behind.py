"""A copy changed while its write to NVMe is in flight never makes the committed
table record an extent whose bytes do not match its CRC.

The window is made deterministic with a swap-file wrapper whose writes take
their bytes from the buffer only when waited for (as a slow disk may, up to
completion). A subprocess (1) fetches a tensor whose write-behind is in
flight, changes it, and commits; or (2) commits while another holder of the
fetched copy changes it mid-write; then dies without closing (``os._exit``).
Reopening must give one consistent value (the last committed one or the new
one), never a checksum mismatch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tiermem.store import StoreConfig, TensorStore, TierKind

N = 3000

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    from tiermem.store import StoreConfig, TensorStore, TierKind
    from tiermem.store.states import Residency

    H, NV = TierKind.HOST, TierKind.NVME
    path, case = sys.argv[1], sys.argv[2]
    N = {n}

    class LateWrites:
        # a swap file whose writes read their buffer only when waited for
        def __init__(self, file):
            self.file, self.before_write = file, None
        def __getattr__(self, name):
            return getattr(self.file, name)
        def submit_write(self, buf, offset=0):
            return LateWrite(self, buf, offset)

    class LateWrite:
        def __init__(self, file, buf, offset):
            self.file, self.buf, self.offset, self.got = file, buf, offset, None
        def done(self):
            return self.got is not None
        def wait(self):
            if self.got is None:
                if self.file.before_write is not None:
                    self.file.before_write()
                self.got = self.file.file.submit_write(self.buf, self.offset).wait()
            return self.got

    # prefetch_bytes larger than the host tier: every dirty release is written behind
    cfg = StoreConfig(host_bytes=1 << 20, prefetch_bytes=1 << 30, nvme_paths=(path,),
                      persistent=True)
    store = TensorStore(cfg)
    store.register("t", N, torch.float32, init=torch.full((N,), 1.0))
    store.write_back()  # committed: 1.0
    files = [LateWrites(s.file) for s in store.tier(NV).stripes]
    for s, f in zip(store.tier(NV).stripes, files):
        s.file = f
    if case == "fetch":
        x = store.fetch("t", H).wait()
        x.fill_(2.0)
        store.release("t", dirty=True)
        assert store.info("t")["states"][H] is Residency.FLUSHING, store.info("t")
        y = store.fetch("t", H).wait()  # its write-behind is in flight
        y.fill_(3.0)
    else:  # "held": write_back of a copy another holder changes mid-write
        a = store.fetch("t", H).wait()
        b = store.fetch("t", H).wait()
        a.fill_(2.0)
        store.release("t", dirty=True)
        files[0].before_write = lambda: b.fill_(3.0)
    store.write_back()
    print("committed", flush=True)
    os._exit(0)  # dies: no close, no further commit
    """
)


@pytest.mark.parametrize("case", ["fetch", "held"])
def test_commit_never_records_a_copy_changed_while_written(tmp_path, case):
    swap = tmp_path / "swap"
    script = SCRIPT.format(n=N)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(swap), case],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0 and "committed" in proc.stdout, proc.stderr[-3000:]
    cfg = StoreConfig(host_bytes=1 << 20, nvme_paths=(str(swap),), persistent=True)
    with TensorStore.open(cfg) as store:
        got = store.fetch("t", TierKind.HOST).wait()  # a torn extent: checksum mismatch
        values = set(got.unique().tolist())
        store.release("t")
    assert len(values) == 1 and values <= {1.0, 2.0, 3.0}, values
    if case == "fetch":  # the write-behind of 2.0 finished before the copy was handed out
        assert values == {2.0}
