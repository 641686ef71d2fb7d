#!/usr/bin/env bash
# Install the peers that bench/aio.py (and bench/adam.py) compare tiermem against.
#
# Run by hand, from anywhere, as root (or with sudo for apt-get); idempotent:
# every step is skipped when its result is already there. CI does not run it:
# the benchmarks report a missing peer as "skipped" with the reason.
#
#   bench/setup_peers.sh
#
# Installs:
#   - Debian: fio (the reference I/O tool) and libaio-dev (DeepSpeed's async
#     I/O op compiles against libaio); build-essential for the JIT ops.
#   - into .venv: deepspeed==0.19.8 with --no-deps, and only its small
#     pure-Python requirements. [Note: never let pip resolve deepspeed's
#     requirements: its "torch" would pull a multi-GB CUDA build over the CPU
#     torch==2.13.0 already in the venv.] DS_ACCELERATOR=cpu makes its
#     AsyncIOBuilder and CPUAdamBuilder (DeepSpeedCPUAdam) build without CUDA;
#     both JIT-compile on first use with ninja and the C++ compiler.
#   - pyuring==0.3.0 (the only version with a wheel; 0.3.3 fails to build).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
DEEPSPEED_VERSION=0.19.8
PYURING_VERSION=0.3.0
# DeepSpeed's runtime requirements minus torch (and its CUDA-only ones).
DS_REQUIREMENTS=(einops hjson msgpack ninja numpy packaging psutil py-cpuinfo "pydantic>=2" tqdm nvidia-ml-py)

if [[ ! -x "$PY" ]]; then
    echo "setup_peers: no Python at $PY; run scripts/bootstrap first (or set PYTHON=...)" >&2
    exit 1
fi
SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi

need_apt=()
command -v fio >/dev/null 2>&1 || need_apt+=(fio)
[[ -e /usr/include/libaio.h ]] || need_apt+=(libaio-dev)
command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
if ((${#need_apt[@]})); then
    echo "setup_peers: apt-get install ${need_apt[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
else
    echo "setup_peers: fio, libaio-dev and g++ already installed"
fi

pip_has() { "$PY" -m pip show -q "$1" >/dev/null 2>&1; }
pip_version() { "$PY" -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }

missing=()
for req in "${DS_REQUIREMENTS[@]}"; do
    name="${req%%[<>=]*}"
    pip_has "$name" || missing+=("$req")
done
if ((${#missing[@]})); then
    echo "setup_peers: pip install ${missing[*]}"
    # [Note: none of these depends on torch; --no-deps is not used here so
    #  that pydantic brings pydantic-core, annotated-types and friends.]
    "$PY" -m pip install -q "${missing[@]}"
fi

if [[ "$(pip_version deepspeed)" != "$DEEPSPEED_VERSION" ]]; then
    echo "setup_peers: pip install --no-deps deepspeed==$DEEPSPEED_VERSION"
    DS_ACCELERATOR=cpu DS_BUILD_OPS=0 "$PY" -m pip install -q --no-deps "deepspeed==$DEEPSPEED_VERSION"
else
    echo "setup_peers: deepspeed $DEEPSPEED_VERSION already installed"
fi

if [[ "$(pip_version pyuring)" != "$PYURING_VERSION" ]]; then
    echo "setup_peers: pip install --no-deps pyuring==$PYURING_VERSION"
    "$PY" -m pip install -q --no-deps "pyuring==$PYURING_VERSION" ||
        echo "setup_peers: pyuring==$PYURING_VERSION did not install; bench/aio.py will skip it" >&2
else
    echo "setup_peers: pyuring $PYURING_VERSION already installed"
fi

# The torch in the venv must still be the CPU build we started with.
"$PY" - <<'PYCHECK'
import torch
assert "+cpu" in torch.__version__ or not torch.cuda.is_available(), torch.__version__
print(f"setup_peers: torch {torch.__version__} unchanged")
PYCHECK

# Build (JIT, cached under ~/.cache/torch_extensions) and load both DeepSpeed
# ops once, so the benchmarks do not pay the compile inside a timed round.
DS_ACCELERATOR=cpu "$PY" - <<'PYCHECK'
import deepspeed.ops.op_builder as ob
for name in ("AsyncIOBuilder", "CPUAdamBuilder"):
    builder = getattr(ob, name)()
    try:
        builder.load(verbose=False)
        print(f"setup_peers: DeepSpeed {name} builds and loads")
    except Exception as exc:  # report, do not fail the whole setup
        print(f"setup_peers: DeepSpeed {name} failed to build: {exc}")
PYCHECK
echo "setup_peers: done"
