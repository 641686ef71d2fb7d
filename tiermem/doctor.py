"""``tiermem doctor``: one screen on whether this machine is ready for offload.

Each check yields a :class:`Finding` with a status (``ok``, ``warn``, ``fail``),
what was seen and, when it is not ok, the fix. The checks only read: the one
file they create (to ask the filesystem for O_DIRECT) is removed at once.
"""

from __future__ import annotations

import enum
import os
import platform
import resource
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

SCHEMA = "tiermem.doctor/1"
GiB = 1 << 30
# [Note: below this much free space, NVMe offload of even a ~1B-parameter model
#  (≈18 bytes/param of training state) does not fit; it is a warning, not a
#  failure, since small models still run.]
LOW_FREE_BYTES = 16 * GiB
# Pinned host buffers (mlock / cudaHostRegister) count against RLIMIT_MEMLOCK;
# below this the pool cannot lock a useful double-buffer.
LOW_MEMLOCK_BYTES = 256 << 20


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One check's result. ``fix`` is empty when the status is ok."""

    check: str
    status: Status
    detail: str
    fix: str = ""
    data: dict = field(default_factory=dict)


def _native_library() -> Finding:
    from tiermem._native import REBUILD_HINT, native

    try:
        _ = native.lib
    except ImportError as exc:
        return Finding(
            check="native library", status=Status.FAIL, detail=str(exc), fix=REBUILD_HINT
        )
    return Finding(
        check="native library",
        status=Status.OK,
        detail=f"loaded from {native.path}",
        data={"path": str(native.path)},
    )


def _simd() -> Finding:
    from tiermem import adam

    name, reason = adam.simd_name(), adam.simd_reason()
    status = Status.OK if name != "scalar" else Status.WARN
    fix = "" if status is Status.OK else "unset TIERMEM_SIMD, or run on a CPU with AVX2/AVX-512"
    return Finding(
        check="CPU Adam SIMD path",
        status=status,
        detail=f"{name} ({reason})",
        fix=fix,
        data={"simd": name, "reason": reason, "threads": adam.get_num_threads()},
    )


def _kernel_io() -> Finding:
    from tiermem import aio

    found = aio.probe()
    if found["io_uring"] == "ok":
        status, fix = Status.OK, ""
    elif found["libaio"] == "ok":
        status = Status.WARN
        fix = (
            "io_uring is refused (Docker >= 25 blocks it by default): run the container with "
            "--security-opt seccomp=unconfined or a profile allowing io_uring_setup; Linux AIO is "
            "used meanwhile"
        )
    else:
        status = Status.WARN
        fix = "neither io_uring nor Linux AIO is allowed: a thread pool does the I/O (slower)"
    detail = ", ".join(f"{k}: {v}" for k, v in found.items())
    return Finding(check="async I/O interfaces", status=status, detail=detail, fix=fix, data=found)


def _directory(path: Path) -> list[Finding]:
    """Filesystem type, O_DIRECT and free space of the offload directory."""
    from tiermem.aio import AioFile
    from tiermem.diskbench import mount_of

    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        return [
            Finding(
                check="offload directory",
                status=Status.FAIL,
                detail=f"{path} {what}",
                fix="create it, or pass the directory you will use as nvme_path",
            )
        ]
    mount, fstype = mount_of(path)
    usage = shutil.disk_usage(path)
    out = []
    probe = path / f".tiermem-doctor-{os.getpid()}.tmp"
    try:
        with AioFile(probe, "x+", follow_symlinks=False) as f:
            direct, reason, backend = f.direct, f.reason, f.backend
    except OSError as exc:
        out.append(
            Finding(
                check="offload directory",
                status=Status.FAIL,
                detail=f"cannot create a file in {path}: {exc.strerror or exc}",
                fix="make the directory writable by this user, or choose another nvme_path",
            )
        )
        return out
    finally:
        probe.unlink(missing_ok=True)
    out.append(
        Finding(
            check="offload directory",
            status=Status.OK if direct else Status.WARN,
            detail=f"{path} on {fstype} ({mount}); O_DIRECT {'yes' if direct else 'no'}, "
            f"backend {backend}: {reason}",
            fix=""
            if direct
            else "this filesystem refuses O_DIRECT (tmpfs, some overlay/network filesystems): "
            "I/O goes through the page cache; put nvme_path on a local ext4/xfs disk",
            data={
                "path": str(path),
                "filesystem": fstype,
                "mount_point": mount,
                "o_direct": direct,
            },
        )
    )
    low = usage.free < LOW_FREE_BYTES
    out.append(
        Finding(
            check="free disk",
            status=Status.WARN if low else Status.OK,
            detail=f"{usage.free / GiB:.1f} GiB free of {usage.total / GiB:.1f} GiB at {mount}",
            fix="free space or choose another nvme_path (≈18 bytes per parameter on NVMe)"
            if low
            else "",
            data={"free_bytes": usage.free, "total_bytes": usage.total},
        )
    )
    return out


def _memlock() -> Finding:
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

    def fmt(v: int) -> str:
        return "unlimited" if v == resource.RLIM_INFINITY else f"{v / (1 << 20):.0f} MiB"

    low = soft != resource.RLIM_INFINITY and soft < LOW_MEMLOCK_BYTES
    return Finding(
        check="pinned memory limit (ulimit -l)",
        status=Status.WARN if low else Status.OK,
        detail=f"soft {fmt(soft)}, hard {fmt(hard)}",
        fix="raise it (`ulimit -l unlimited`, or memlock in /etc/security/limits.conf; "
        "Docker: --ulimit memlock=-1) so host buffers can be pinned"
        if low
        else "",
        data={"soft": soft, "hard": hard},
    )


def _torch_and_cuda() -> list[Finding]:
    import torch

    out = [
        Finding(
            check="torch",
            status=Status.OK,
            detail=f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})",
            data={"version": torch.__version__, "cuda_build": torch.version.cuda},
        )
    ]
    if not torch.cuda.is_available():
        out.append(
            Finding(
                check="GPU",
                status=Status.WARN,
                detail="no CUDA device: the CPU is the compute device, the device tier is host "
                "memory",
                fix="fine for testing; for training speed install a CUDA build of torch on a GPU "
                "machine",
                data={"count": 0},
            )
        )
        return out
    gpus = []
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        free, total = torch.cuda.mem_get_info(i)
        gpus.append({"name": props.name, "total_bytes": total, "free_bytes": free})
    detail = "; ".join(
        f"{g['name']} {g['free_bytes'] / GiB:.1f}/{g['total_bytes'] / GiB:.1f} GiB free"
        for g in gpus
    )
    out.append(
        Finding(
            check="GPU", status=Status.OK, detail=detail, data={"count": len(gpus), "gpus": gpus}
        )
    )
    return out


def _host_memory() -> Finding:
    import psutil

    vm = psutil.virtual_memory()
    return Finding(
        check="host memory",
        status=Status.OK,
        detail=f"{vm.available / GiB:.1f} GiB available of {vm.total / GiB:.1f} GiB; "
        f"{len(os.sched_getaffinity(0))} usable cores",
        data={"total_bytes": vm.total, "available_bytes": vm.available},
    )


def run(directory: Path) -> list[Finding]:
    """Run every check; the native ones are skipped (and say so) when the library is missing."""
    findings = [_native_library()]
    native_ok = findings[0].status is Status.OK
    native_checks: list[Callable[[], list[Finding] | Finding]] = [
        _simd,
        _kernel_io,
        lambda: _directory(directory),
    ]
    for check in native_checks:
        if not native_ok:
            break
        result = check()
        findings.extend(result if isinstance(result, list) else [result])
    findings.append(_memlock())
    findings.append(_host_memory())
    findings.extend(_torch_and_cuda())
    return findings


def to_json(findings: list[Finding]) -> dict:
    """The ``--json`` document (schema ``tiermem.doctor/1``)."""
    return {
        "schema": SCHEMA,
        "platform": platform.platform(),
        "ok": all(f.status is not Status.FAIL for f in findings),
        "findings": [{**asdict(f), "status": f.status.value} for f in findings],
    }
