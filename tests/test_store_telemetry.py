"""The store's telemetry counts what it moved and writes a valid Chrome trace."""

from __future__ import annotations

import json

import torch

from tiermem.store import StoreConfig, TensorStore, TierKind

H, D = TierKind.HOST, TierKind.DEVICE
NUMEL = 64 << 10  # 256 KiB fp32
NBYTES = NUMEL * 4


def test_counters_follow_a_known_sequence(tmp_path):
    cfg = StoreConfig(
        device_bytes=NBYTES,
        host_bytes=2 * NBYTES,
        nvme_paths=(tmp_path / "a", tmp_path / "b"),
        stripe_unit=64 << 10,
        prefetch_bytes=0,
    )
    with TensorStore(cfg) as store:
        for i in range(4):
            store.register(f"t{i}", NUMEL, torch.float32)
        snap = store.telemetry.snapshot()
        assert snap["bytes_moved"] == {"host->nvme": 4 * NBYTES}
        assert snap["evictions"]["host"] == 2  # 4 staged through a 2-tensor tier
        store.telemetry.reset()

        for i in (2, 3, 0, 1):  # t2, t3 cached; t0, t1 read from disk, evicting them
            store.fetch(f"t{i}", H).wait()
            store.release(f"t{i}")
        t = store.fetch("t3", D).wait()  # staged through HOST again, evicting t0
        t.fill_(1.0)
        store.release("t3", dirty=True)
        store.write_back()  # device -> host staging -> nvme

        snap = store.telemetry.snapshot()
        assert snap["fetches"] == 5
        assert snap["cache_hits"] == 2  # t2, t3 in HOST at start
        assert snap["bytes_moved"]["nvme->host"] == 3 * NBYTES
        assert snap["bytes_moved"]["host->device"] == NBYTES
        assert snap["bytes_moved"]["device->host"] == NBYTES
        assert snap["bytes_moved"]["host->nvme"] == NBYTES
        assert snap["write_backs"] == 1
        assert snap["evictions"]["host"] == 3
        assert snap["checksum_bytes"] == 4 * NBYTES  # 3 verified reads + 1 write
        assert snap["stall_seconds"] >= 0
        tiers = snap["tiers"]
        assert tiers["host"]["peak"] == 2 * NBYTES == tiers["host"]["budget"]
        assert tiers["device"]["peak"] == NBYTES
        assert tiers["nvme"]["used"] == 4 * NBYTES
        json.dumps(snap)

        path = store.telemetry.write_chrome_trace(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    tracks = {
        e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"
    }
    io = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "io"]
    by_track = {}
    for e in io:
        by_track.setdefault(tracks[e["tid"]], []).append(e["name"])
        assert e["dur"] >= 0 and e["ts"] >= 0 and e["args"]["bytes"] == NBYTES
    assert sorted(by_track["nvme->host"]) == ["t0", "t1", "t3"]
    assert by_track["host->device"] == ["t3"] and by_track["host->nvme"] == ["t3"]
