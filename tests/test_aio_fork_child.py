"""A file inherited across fork fails clearly in the child (its I/O engine runs only in
the parent) instead of blocking forever; the parent's file keeps working; closing in the
child closes only the child's copies (issue 18, item 13)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import BACKENDS

SCRIPT = textwrap.dedent(
    """
    import errno, os, signal, sys
    import numpy as np
    from tiermem.aio import AioConfig, AioFile

    f = AioFile(sys.argv[1], "w+", config=AioConfig(backend=sys.argv[2]))
    data = np.arange(8192, dtype=np.uint8)
    f.write(data, 0)
    held = f.submit_read(np.zeros(8192, dtype=np.uint8), 0)
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)  # a hang in the child is a failure
        results = []
        for what, call in (("write", lambda: f.write(data, 8192)), ("wait", held.wait)):
            try:
                call()
                results.append(f"{what}: no error")
            except OSError as exc:
                ok = exc.errno == errno.ECHILD and "inherited across fork" in str(exc)
                results.append(f"{what}: {'ok' if ok else exc}")
        f.close()
        print("child", results, flush=True)
        os._exit(0 if all(r.endswith(": ok") for r in results) else 3)
    _, status = os.waitpid(pid, 0)
    assert held.wait() == 8192
    f.write(data, 8192)
    back = np.zeros(16384, dtype=np.uint8)
    f.read_into(back, 0)
    assert (back[:8192] == data).all() and (back[8192:] == data).all()
    f.close()
    print("parent ok", os.waitstatus_to_exitcode(status), flush=True)
    """
)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inherited_file_fails_clearly_in_child(tmp_path, backend):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "f.bin"), backend],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parent ok 0" in proc.stdout, proc.stdout + proc.stderr
