#!/usr/bin/env bash
# The one command for a lent GPU machine: builds tiermem's native library there with its
# CMake, stages the package (tiermem, tiermem.engine, the library and its headers) under
# build/gpu/pkg, and runs bench/gpu_check.py with every argument passed on. See docs/gpu.md.
#
#   bench/gpu_check.sh [gpu_check.py options]   # on the GPU machine (through the device tool)
#   bench/gpu_check.sh --prepare                # here, once before: cffi + pycparser wheels for
#                                               # the machine's Python 3.12 and a prebuilt library
#                                               # into build/gpu-wheels (carry that folder)
#
# Environment: PYTHON (default python3; --prepare prefers .venv/bin/python), TIERMEM_PREBUILT
# (a libtiermem_native.so to use instead of building), GPU_CHECK_STAGE (default build/gpu).
# Without CUDA (and without --allow-cpu) it builds nothing: gpu_check.py says it needs a GPU.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

STAGE=${GPU_CHECK_STAGE:-build/gpu}
case $STAGE in /*) ;; *) STAGE=$PWD/$STAGE ;; esac
CARRY=$PWD/build/gpu-wheels
CFFI_VERSION=2.1.1
PYCPARSER_VERSION=3.12
log() { echo "[gpu_check.sh] $*"; }

if [ "${1:-}" = "--prepare" ]; then
    PY=${PYTHON:-}
    if [ -z "$PY" ]; then
        if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
    fi
    mkdir -p "$CARRY" || exit 1
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$CARRY" \
        "cffi==$CFFI_VERSION" "pycparser==$PYCPARSER_VERSION" || exit 1
    lib=$("$PY" -c 'from tiermem._native import find_library; print(find_library())') || exit 1
    cp "$lib" "$CARRY/libtiermem_native.so" || exit 1
    log "ready to carry: $CARRY ($(du -sh "$CARRY" | cut -f1)): $(ls "$CARRY" | tr '\n' ' ')"
    exit 0
fi

PY=${PYTHON:-python3}
case $PY in /*) ;; */*) PY=$PWD/$PY ;; esac  # a relative path must survive the cd below
export PYTHONUNBUFFERED=1
allow_cpu=0
for arg in "$@"; do
    if [ "$arg" = "--allow-cpu" ]; then allow_cpu=1; fi
done
cuda=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
if [ "$cuda" != 1 ] && [ "$allow_cpu" = 0 ]; then
    exec "$PY" bench/gpu_check.py "$@"  # prints that it needs a GPU, exits 0
fi
mkdir -p "$STAGE" || exit 1

# cffi is not in the GPU machine's image: install the carried wheels into the stage.
if ! "$PY" -c 'import cffi' 2>/dev/null; then
    if ls "$CARRY"/*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$STAGE/site" "$CARRY"/*.whl || log "installing the carried wheels failed"
        export PYTHONPATH="$STAGE/site${PYTHONPATH:+:$PYTHONPATH}"
    else
        log "cffi is missing and $CARRY holds no wheels: run 'bench/gpu_check.sh --prepare'" \
            "where pip works, and carry $CARRY"
    fi
fi

# The native library: built here with the project's CMake, else the carried prebuilt one.
if [ -n "${TIERMEM_PREBUILT:-}" ]; then
    lib=$TIERMEM_PREBUILT
    log "using the prebuilt library $lib"
else
    generator=()
    if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
    t0=$(date +%s)
    if cmake -S . -B "$STAGE/cmake" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
        >"$STAGE/cmake.log" 2>&1 &&
        cmake --build "$STAGE/cmake" -j "$(nproc)" >>"$STAGE/cmake.log" 2>&1; then
        lib=$STAGE/cmake/libtiermem_native.so
        log "built $lib in $(($(date +%s) - t0)) s"
    elif [ -f "$CARRY/libtiermem_native.so" ]; then
        tail -n 20 "$STAGE/cmake.log"
        lib=$CARRY/libtiermem_native.so
        log "the CMake build failed (log above); using the carried $lib"
    else
        tail -n 40 "$STAGE/cmake.log"
        log "the CMake build failed (log above) and no prebuilt library was carried"
        exit 1
    fi
fi

# The package as its wheel lays it out (engine/ becomes tiermem/engine).
pkg=$STAGE/pkg
rm -rf "$pkg" && mkdir -p "$pkg/tiermem/include" || exit 1
cp -r tiermem/. "$pkg/tiermem/" && rm -rf "$pkg/tiermem/engine" &&
    cp -r engine "$pkg/tiermem/engine" &&
    cp "$lib" "$pkg/tiermem/libtiermem_native.so" &&
    cp native/include/*.h "$pkg/tiermem/include/" || exit 1
export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
export TIERMEM_LIBRARY=$pkg/tiermem/libtiermem_native.so
# [Note: checked from /, not the repository root, where the source tree's tiermem/ (which
#  has no engine/ inside) would shadow the stage on sys.path.]
(cd / && "$PY" - <<'EOF') || exit 1
import tiermem
import tiermem.engine
from tiermem import native

if not native.available():
    native.lib  # raises NativeLibraryError naming what failed
print(f"[gpu_check.sh] tiermem from {tiermem.__file__}, library {native.path}", flush=True)
EOF
exec "$PY" bench/gpu_check.py "$@"
