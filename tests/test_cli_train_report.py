"""`tiermem train --report DIR`: run.json, Chrome trace, loss and timeline PNGs."""

from __future__ import annotations

import json

from tiermem.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_report_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "out" / "report"  # created, parents too
    rc = main(["train", "--model", "tiny", "--steps", "5", "--report", str(report)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert sorted(p.name for p in report.iterdir()) == [
        "loss.png",
        "run.json",
        "timeline.png",
        "trace.json",
    ]
    for name in ("loss.png", "timeline.png"):
        data = (report / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
    run = json.loads((report / "run.json").read_text())
    assert [h["step"] for h in run["history"]] == [1, 2, 3, 4, 5]
    assert all(h["loss"] > 0 and h["seconds"] > 0 for h in run["history"])
    assert run["loss"]["first"] == sum(h["loss"] for h in run["history"][:2]) / 2
    assert run["files"]["trace"].endswith("trace.json")
    trace = json.loads((report / "trace.json").read_text())
    events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
    phases = [e["name"] for e in events if e.get("cat") == "compute"]
    assert phases == ["forward", "backward", "step"] * 5
    threads = {e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "thread_name"}
    assert {"compute", "host->nvme"} <= threads  # the store's transfers are in the trace
    assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in events)
    assert str(report / "run.json") in out
