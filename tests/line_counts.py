"""Cost counted as lines of the project's own code executed, for scaling tests.

[Note: counted, not timed (``sys.settrace``), so the machine's load does not
matter, and a quadratic scan shows as lines whether or not it calls anything.]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STORE_CODE = (str(REPO / "tiermem" / "store") + "/",)
OWN_CODE = (str(REPO / "engine") + "/", str(REPO / "tiermem") + "/")


def lines_executed(fn: Callable[[], object], prefixes: tuple[str, ...]) -> int:
    """Lines of files under ``prefixes`` that ``fn()`` executes."""
    count = 0

    def local(frame, event, arg):
        nonlocal count
        if event == "line":
            count += 1
        return local

    def calls(frame, event, arg):
        return local if frame.f_code.co_filename.startswith(prefixes) else None

    sys.settrace(calls)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count
