"""StoreTelemetry counters and Chrome trace format."""

from __future__ import annotations

import json

from tiermem.store.states import TierKind
from tiermem.store.telemetry import StoreTelemetry


def test_counters_and_trace(tmp_path):
    t = StoreTelemetry(lambda: {"host": {"used": 1, "budget": 2, "peak": 3}})
    t0 = t.t0
    t.transfer(TierKind.NVME, TierKind.HOST, "w1", 4096, t0 + 0.001, t0 + 0.003)
    t.transfer(TierKind.NVME, TierKind.HOST, "w2", 8192, t0 + 0.002, t0 + 0.004)
    t.transfer(TierKind.HOST, TierKind.DEVICE, "w1", 4096, t0 + 0.004, t0 + 0.005)
    t.stall("w2", t0 + 0.003, t0 + 0.0035)
    snap = t.snapshot()
    assert snap["bytes_moved"] == {"nvme->host": 12288, "host->device": 4096}
    assert snap["transfers"]["nvme->host"] == 2
    assert abs(snap["stall_seconds"] - 0.0005) < 1e-9
    assert snap["tiers"]["host"]["peak"] == 3
    json.dumps(snap)

    path = t.write_chrome_trace(tmp_path / "trace.json")
    trace = json.loads(path.read_text())
    events = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    names = {
        e["tid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "thread_name"
    }
    assert sorted(names.values()) == ["host->device", "nvme->host", "stall"]
    w1 = [e for e in events if e["name"] == "w1" and names[e["tid"]] == "nvme->host"][0]
    assert w1["ts"] == 1000.0 and w1["dur"] == 2000.0 and w1["args"]["bytes"] == 4096
    t.reset()
    assert t.snapshot()["bytes_moved"] == {} and t.events == []
