"""Loader for the native C library (``libtiermem_native.so``) through cffi.

The library is plain C11; its public headers are the single statement of the
interface and are read here to build the cffi declarations, so nothing is
written twice. ``import tiermem`` never fails because of the library: the
first native call raises :class:`NativeLibraryError` saying what failed and
how to rebuild.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from pathlib import Path

import cffi

LIBRARY_NAME = "libtiermem_native.so"
# Headers in dependency order; a header that a later component adds is listed here.
HEADERS = ("tiermem_aio.h", "tiermem_buffers.h", "tiermem_adam.h", "tiermem_checksum.h")

REBUILD_HINT = (
    "rebuild it with `pip install -e .` (or `pip install .`) from the tiermem source tree, "
    "or point TIERMEM_LIBRARY at a built libtiermem_native.so"
)


class NativeLibraryError(ImportError):
    """The native library could not be found or loaded."""


def _package_dirs() -> list[Path]:
    """Every directory the ``tiermem`` package spans.

    [Note: in an editable install the Python files are served from the source
    tree while the built .so sits in site-packages, so the library is not next
    to ``__file__``; the import system's own view of the package lists both.]
    """
    dirs: list[Path] = []
    spec = importlib.util.find_spec("tiermem")
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(Path(p) for p in spec.submodule_search_locations)
    dirs.append(Path(__file__).resolve().parent)
    try:
        import importlib.resources as resources

        dirs.append(Path(str(resources.files("tiermem"))))
    except (ModuleNotFoundError, TypeError, NotImplementedError):
        pass
    # scikit-build-core's editable finder records where it installed files.
    for finder in __import__("sys").meta_path:
        known = getattr(finder, "known_wheel_files", None)
        if isinstance(known, dict):
            for key, path in known.items():
                if key.startswith("tiermem/") or key.startswith("tiermem."):
                    dirs.append(Path(path).parent)
    seen: set[Path] = set()
    unique = []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            unique.append(d)
    return unique


def find_library() -> Path:
    """Path of the native library, or raise :class:`NativeLibraryError`."""
    env = os.environ.get("TIERMEM_LIBRARY")
    if env:
        path = Path(env)
        if not path.is_file():
            raise NativeLibraryError(f"TIERMEM_LIBRARY={env} is not a file; {REBUILD_HINT}")
        return path
    searched = []
    for d in _package_dirs():
        cand = d / LIBRARY_NAME
        searched.append(str(cand))
        if cand.is_file():
            return cand
    raise NativeLibraryError(
        f"{LIBRARY_NAME} not found (looked in: {', '.join(searched)}); {REBUILD_HINT}"
    )


def _find_headers(lib_path: Path) -> Path:
    candidates = [
        lib_path.parent / "include",
        lib_path.parent.parent / "include" / "tiermem",
        Path(__file__).resolve().parent.parent / "native" / "include",
    ]
    for c in candidates:
        if (c / HEADERS[0]).is_file():
            return c
    raise NativeLibraryError(
        f"tiermem C headers not found next to {lib_path} (looked in "
        f"{', '.join(map(str, candidates))}); {REBUILD_HINT}"
    )


def header_cdef(text: str) -> str:
    """Turn a tiermem public header into cffi declarations.

    Drops preprocessor lines and the export macro; the headers are written in
    the subset of C that cffi parses.
    """
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return re.sub(r"\bTM_API\s+", "", "\n".join(lines))


class _Native:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib = None
        self._ffi: cffi.FFI | None = None
        self._error: NativeLibraryError | None = None
        self.path: Path | None = None

    def _load(self) -> None:
        if self._error is not None:
            raise self._error
        try:
            path = find_library()
            include = _find_headers(path)
            ffi = cffi.FFI()
            for name in HEADERS:
                h = include / name
                if h.is_file():
                    ffi.cdef(header_cdef(h.read_text()))
            # [Note: RTLD_NODELETE: cffi unloads the library when its handle is
            #  freed, which interpreter finalization does while engine, I/O and
            #  Adam worker threads are still parked inside its code; one woken
            #  (an I/O completion) before the process ends then jumps into
            #  unmapped memory (SIGSEGV at exit). Kept mapped, it is harmless.]
            lib = ffi.dlopen(str(path), ffi.RTLD_NOW | ffi.RTLD_NODELETE)
        except NativeLibraryError as exc:
            self._error = exc
            raise
        except (OSError, cffi.CDefError, cffi.FFIError) as exc:
            self._error = NativeLibraryError(
                f"loading the tiermem native library failed: {exc}; {REBUILD_HINT}"
            )
            raise self._error from exc
        self._ffi, self._lib, self.path = ffi, lib, path

    @property
    def lib(self):
        if self._lib is None:
            with self._lock:
                if self._lib is None:
                    self._load()
        return self._lib

    @property
    def ffi(self) -> cffi.FFI:
        if self._ffi is None:
            _ = self.lib
        assert self._ffi is not None
        return self._ffi

    def available(self) -> bool:
        try:
            _ = self.lib
        except NativeLibraryError:
            return False
        return True


native = _Native()
"""The process-wide handle on the C library; ``native.lib`` loads it on first use."""
