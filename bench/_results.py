"""What every benchmark in bench/ records beside its numbers, and how it writes them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine_info() -> dict:
    """The machine a result was measured on, including how busy it was."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        ram = None
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "ram_bytes": ram,
        "loadavg": os.getloadavg(),
    }


def write_results(path: str | os.PathLike, result: dict, *, indent: int = 2) -> Path:
    """Write ``result`` as JSON at ``path`` (parents created) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=indent) + "\n")
    print(f"wrote {out}")
    return out
