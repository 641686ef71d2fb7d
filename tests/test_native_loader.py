"""The library loader: found in an editable install, clear error when missing."""

from __future__ import annotations

import os
import subprocess
import sys

from tiermem._native import find_library, header_cdef, native


def test_library_loads_and_reports_version():
    assert native.available()
    assert find_library().name == "libtiermem_native.so"
    assert native.ffi.string(native.lib.tm_version()).startswith(b"tiermem_native")


def test_missing_library_import_still_works_and_error_says_how_to_rebuild(tmp_path):
    env = dict(os.environ, TIERMEM_LIBRARY=str(tmp_path / "missing.so"))
    code = (
        "import tiermem\n"
        "from tiermem.buffers import HostBufferPool\n"
        "try:\n"
        "    HostBufferPool(4096).allocate(1)\n"
        "except tiermem.NativeLibraryError as e:\n"
        "    print('ERR', e)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert (
        res.stdout.startswith("ERR") and "missing.so" in res.stdout and "pip install" in res.stdout
    )


def test_header_cdef_strips_preprocessor_and_macros():
    text = '#ifndef X\n#include "a.h"\n/* doc */\nTM_API int f(int a); // c\n#endif\n'
    assert header_cdef(text).split() == ["int", "f(int", "a);"]
