"""TIERMEM_FAULTS under the store: EIO, ENOSPC, short transfers and latency spikes.

Each fault is a StoreError naming the tensor, the swap file and the operation;
a short transfer is never taken for data (also without checksums); the
tensor's previous copy stays readable; the store keeps working after it.
"""

from __future__ import annotations

import time

import pytest
import torch

from tiermem.faults import FAULTS_ENV, Fault, parse_faults
from tiermem.store import Residency, StoreConfig, StoreError, TensorStore, TierKind

H, NV = TierKind.HOST, TierKind.NVME
N = 64 << 10  # fp32: 256 KiB


def make(tmp_path, monkeypatch, spec: str, **kw) -> TensorStore:
    monkeypatch.setenv(FAULTS_ENV, spec)
    cfg = dict(host_bytes=1 << 20, nvme_paths=(tmp_path / "s",), prefetch_bytes=0)
    cfg.update(kw)
    return TensorStore(StoreConfig(**cfg))


def evict(store: TensorStore) -> None:
    store.register("filler", 4 * N, torch.float32)  # the whole host budget
    store.drop("filler")


def test_spec_grammar():
    assert parse_faults(" eio@w7, short@r3,delay@5:50ms,enospc@2 ,kill@w9") == [
        Fault(kind="eio", nth=7, op="write"),
        Fault(kind="short", nth=3, op="read"),
        Fault(kind="delay", nth=5, delay_s=0.05),
        Fault(kind="enospc", nth=2),
        Fault(kind="kill", nth=9, op="write"),
    ]
    for bad in ("eio", "eio@0", "boom@3", "delay@3", "delay@3:5min", "eio@3:1ms", "eio@x3"):
        with pytest.raises(ValueError, match=f"{FAULTS_ENV}: bad fault '{bad}'"):
            parse_faults(bad)


def test_bad_spec_refuses_to_open(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=f"{FAULTS_ENV}: bad fault 'eio@'"):
        make(tmp_path, monkeypatch, "eio@")


@pytest.mark.parametrize("kind,text", [("eio", "Input/output error"), ("enospc", "No space")])
def test_failed_write_keeps_the_dirty_copy(tmp_path, monkeypatch, kind, text):
    with make(tmp_path, monkeypatch, f"{kind}@w2") as store:
        store.register("a", N, torch.float32, init=torch.ones(N))  # write 1
        t = store.fetch("a", H).wait()
        t.fill_(3.0)
        store.release("a", dirty=True)
        with pytest.raises(StoreError) as err:
            store.write_back("a")  # write 2 fails
        msg = str(err.value)
        path = store.tier(NV).stripes[0].path
        assert "writing tensor 'a'" in msg and str(path) in msg and text in msg, msg
        assert f"injected fault {kind}@w2" in msg
        assert store.info("a")["states"][H] is Residency.DIRTY
        store.write_back("a")
        evict(store)
        assert torch.equal(store.fetch("a", H).wait(), torch.full((N,), 3.0))


@pytest.mark.parametrize("checksum", [True, False])
def test_short_read_is_never_data(tmp_path, monkeypatch, checksum):
    with make(tmp_path, monkeypatch, "short@r1", checksum=checksum) as store:
        want = torch.arange(N, dtype=torch.float32)
        store.register("a", N, torch.float32, init=want)
        evict(store)
        with pytest.raises(StoreError) as err:
            store.fetch("a", H).wait()
        msg = str(err.value)
        assert "reading tensor 'a'" in msg and f"short read: {2 * N} of {4 * N} bytes" in msg, msg
        assert store.info("a")["states"][H] is Residency.ABSENT
        assert torch.equal(store.fetch("a", H).wait(), want)  # a second read is whole
        (fault, where) = store.tier(NV).faults.fired[0]
        assert str(fault) == "short@r1" and where.startswith(f"read of {4 * N} bytes")


@pytest.mark.parametrize("checksum", [True, False])
def test_short_write_is_never_committed(tmp_path, monkeypatch, checksum):
    with make(tmp_path, monkeypatch, "short@w2", checksum=checksum) as store:
        store.register("a", N, torch.float32, init=torch.ones(N))
        t = store.fetch("a", H).wait()
        t.copy_(torch.arange(N, dtype=torch.float32))
        store.release("a", dirty=True)
        old = store.info("a")["extent"]
        with pytest.raises(StoreError, match=f"short write: {2 * N} of {4 * N} bytes"):
            store.write_back("a")
        assert store.info("a")["extent"] == old  # still points at the whole old copy
        assert store.info("a")["states"][H] is Residency.DIRTY
        store.write_back("a")
        evict(store)
        assert torch.equal(store.fetch("a", H).wait(), torch.arange(N, dtype=torch.float32))


def test_latency_spike_delays_but_changes_nothing(tmp_path, monkeypatch):
    with make(tmp_path, monkeypatch, "delay@r1:300ms,delay@w3:100ms") as store:
        want = torch.arange(N, dtype=torch.float32)
        store.register("a", N, torch.float32, init=want)
        evict(store)
        t0 = time.monotonic()
        handle = store.fetch("a", H)
        assert not handle.done()  # still "in flight" during the spike
        assert torch.equal(handle.wait(), want)
        assert time.monotonic() - t0 >= 0.3
        store.release("a")
        assert [str(f) for f, _ in store.tier(NV).faults.fired] == ["delay@r1:300ms"]


def test_unset_means_plain_files(tmp_path, monkeypatch):
    with make(tmp_path, monkeypatch, "") as store:
        store.register("a", 10, torch.float32)
        assert store.tier(NV).faults is None
        assert type(store.tier(NV).stripes[0].file).__name__ == "AioFile"


def test_failed_prefetch_is_reported_by_the_fetch_that_needed_it(tmp_path, monkeypatch):
    # a plan that never fires: the files are wrapped, faults are added later
    store = make(tmp_path, monkeypatch, "delay@r1000000:1us", prefetch_bytes=2 * 4 * N)
    with store:
        names = [f"t{i}" for i in range(6)]
        for i, name in enumerate(names):
            store.register(name, N, torch.float32, init=torch.full((N,), float(i)))
        plan = store.tier(NV).faults
        for _ in range(2):  # the first pass records the schedule, the second replays it
            store.begin_pass()
            for name in names:
                store.fetch(name, H).wait()
                store.release(name)
            store.end_pass()
        plan.add("eio@r1")  # the next read: a prefetch, issued by the fetch of t0
        store.begin_pass()
        raised = []
        for i, name in enumerate(names):
            fired_before = len(plan.fired)
            try:
                got = store.fetch(name, H).wait()
            except StoreError as exc:
                raised.append((name, fired_before, str(exc)))
                continue
            assert torch.equal(got, torch.full((N,), float(i)))
            store.release(name)
        store.end_pass()
        ((name, fired_before, msg),) = raised  # one error, at the fetch of the tensor
        assert fired_before == 1  # ... whose read had failed during an earlier fetch
        assert f"reading tensor '{name}'" in msg and "injected fault eio@r1" in msg
        i = names.index(name)
        assert torch.equal(store.fetch(name, H).wait(), torch.full((N,), float(i)))  # retried


def test_failed_write_behind_is_raised_by_the_next_fetch_not_by_a_release(tmp_path, monkeypatch):
    # prefetch window as large as the host tier: a dirty release is written behind at once
    with make(tmp_path, monkeypatch, "eio@w3", prefetch_bytes=1 << 20) as store:
        store.register("a", N, torch.float32, init=torch.ones(N))  # write 1
        store.register("b", N, torch.float32, init=torch.ones(N))  # write 2
        b = store.fetch("b", H).wait()
        store.fetch("a", H).wait().fill_(4.0)
        store.release("a", dirty=True)  # write-behind: write 3 fails
        assert store.tier(NV).faults.fired
        b.fill_(5.0)
        store.release("b", dirty=True)  # another tensor's release: not its error
        with pytest.raises(StoreError, match="writing tensor 'a' .*injected fault eio@w3"):
            store.fetch("b", H)
        assert store.info("a")["states"][H] is Residency.DIRTY  # the new values are kept
        store.write_back()
        evict(store)
        assert torch.equal(store.fetch("a", H).wait(), torch.full((N,), 4.0))
        assert torch.equal(store.fetch("b", H).wait(), torch.full((N,), 5.0))
