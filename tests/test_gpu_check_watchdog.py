"""The watchdog of bench/gpu_check.py: past the budget it prints the table, marks the running
section, writes the JSON and exits 3."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_watchdog_reports_and_exits_three(tmp_path):
    report_path = tmp_path / "report.json"
    code = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(BENCH)!r})
        from pathlib import Path
        from gpu_check import Report, start_watchdog
        report = Report(Path({str(report_path)!r}))
        rates = {{"h2d": {{"tiermem": 9.5}}}}
        report.sections["transfer"] = {{"status": "ok", "rates_gbps": rates}}
        report.current = "big"
        report.partial = {{"init_s": 12.5}}
        start_watchdog(report, 0.2)
        time.sleep(60)  # a section that hangs
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "watchdog fired" in proc.stdout and "in big" in proc.stdout
    assert "9.5" in proc.stdout  # what was measured before still gets printed
    report = json.loads(report_path.read_text())
    assert report["sections"]["big"]["status"] == "error"
    assert "watchdog" in report["sections"]["big"]["error"]
    assert report["sections"]["big"]["init_s"] == 12.5  # the running section's partial results
    assert report["sections"]["transfer"]["status"] == "ok"
