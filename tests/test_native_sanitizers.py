"""The C tests of the I/O engine (native/tests/test_aio_*.c), built with
AddressSanitizer and UndefinedBehaviorSanitizer straight from the native sources, and
run: a use-after-free, a leak, undefined behaviour or a hang (each test arms an alarm)
fails them. They cover requests outliving their file, refused submissions and timed
waits, partly submitted requests, fork, and the O_DIRECT alignment check (issue 18).

Manual equivalent, from the repository root::

    gcc -std=gnu11 -D_GNU_SOURCE -g -fsanitize=address,undefined \\
        -Inative/include -Inative/src native/tests/test_aio_fork.c \\
        native/src/{aio,aio_uring,aio_libaio,aio_threads,util,buffers}.c -lpthread -o t && ./t
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
SOURCES = ("aio.c", "aio_uring.c", "aio_libaio.c", "aio_threads.c", "util.c", "buffers.c")
CFLAGS = (
    "-std=gnu11",
    "-D_GNU_SOURCE",
    "-g",
    "-O1",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-Wall",
    "-Wextra",
    "-Wno-unused-parameter",
    "-Werror",
)
TESTS = sorted(p.stem for p in (NATIVE / "tests").glob("test_aio_*.c"))


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc) to build the sanitizer tests")
    return cc


@pytest.fixture(scope="module")
def objects(tmp_path_factory) -> tuple[str, list[Path]]:
    """The engine's sources compiled once with the sanitizers."""
    cc = _compiler()
    out = tmp_path_factory.mktemp("asan")
    objs = []
    for src in SOURCES:
        obj = out / (Path(src).stem + ".o")
        cmd = [cc, *CFLAGS, f"-I{NATIVE / 'include'}", f"-I{NATIVE / 'src'}", "-c"]
        proc = subprocess.run(
            [*cmd, str(NATIVE / "src" / src), "-o", str(obj)], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"compiling {src}:\n{proc.stderr}"
        objs.append(obj)
    return cc, objs


def test_there_are_c_tests():
    assert {"test_aio_close_lifetime", "test_aio_submit_refused", "test_aio_fork"} <= set(TESTS)


@pytest.mark.parametrize("name", TESTS)
def test_c_test_passes_under_sanitizers(name, objects, tmp_path):
    cc, objs = objects
    exe = tmp_path / name
    src = NATIVE / "tests" / f"{name}.c"
    build = subprocess.run(
        [cc, *CFLAGS, f"-I{NATIVE / 'include'}", str(src), *map(str, objs), "-lpthread"]
        + ["-o", str(exe)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, f"building {name}:\n{build.stderr}"
    env = dict(
        os.environ,
        TMPDIR=str(tmp_path),
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=23",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
    )
    env.pop("TIERMEM_AIO_DIO_ALIGN", None)
    env.pop("LD_PRELOAD", None)
    proc = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    assert "ok " in proc.stdout
    assert "runtime error" not in proc.stderr  # UBSan
