"""Injected I/O faults for testing: EIO, ENOSPC, short transfers and latency spikes.

A :class:`FaultyAioFile` wraps an :class:`~tiermem.aio.AioFile` with the
same interface and misbehaves at chosen requests of a :class:`FaultPlan`.
The store's NVMe tier wraps every swap file when the environment variable
``TIERMEM_FAULTS`` is set (read once, when the store opens), so the faults
reach the store and everything above it, the engine included::

    TIERMEM_FAULTS="eio@w7,short@r3,delay@5:50ms" python train.py

Items are separated by commas; each is ``KIND@[r|w]N[:ARG]``:

* ``N`` counts the requests (one read or write submitted to a swap file) of
  one store from when it opened, starting at 1; with ``r`` or ``w`` only its
  reads or only its writes are counted.
* ``eio`` / ``enospc``: the request fails with that errno; nothing is
  transferred.
* ``short``: only the first half of the bytes is transferred and waiting on
  the request raises ``OSError(EIO, "short read: X of Y bytes ...")``, as an
  :class:`~tiermem.aio.AioRequest` does for a real short transfer.
* ``delay:DURATION`` (``50ms``, ``2s``, ``300us``): the request completes
  that much later than it would have (``done()`` stays False meanwhile).
* ``kill``: the request is submitted, then the process kills itself with
  SIGKILL while it is in flight (a crash in the middle of a swap transfer).

The plan records every fault it fires (:attr:`FaultPlan.fired`). More faults
may be added to a live plan with :meth:`FaultPlan.add`, counted from then on.
"""

from __future__ import annotations

import errno as errno_mod
import os
import re
import signal
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from tiermem.aio import AioFile, buffer_address

FAULTS_ENV = "TIERMEM_FAULTS"
KINDS = ("eio", "enospc", "short", "delay", "kill")
_ERRNOS = {"eio": errno_mod.EIO, "enospc": errno_mod.ENOSPC}
_ITEM = re.compile(r"^(?P<kind>[a-z]+)@(?P<op>[rw]?)(?P<n>\d+)(?::(?P<arg>.+))?$")
_DURATION = re.compile(r"^(?P<value>\d+(?:\.\d+)?)(?P<unit>us|ms|s)$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One planned fault: ``kind`` at the ``nth`` request (of ``op``, or any)."""

    kind: str
    nth: int
    op: str | None = None  # "read", "write" or None for either
    delay_s: float = 0.0

    def __str__(self) -> str:
        op = {"read": "r", "write": "w", None: ""}[self.op]
        arg = f":{self.delay_s * 1e3:g}ms" if self.kind == "delay" else ""
        return f"{self.kind}@{op}{self.nth}{arg}"


def parse_faults(spec: str, *, source: str = FAULTS_ENV) -> list[Fault]:
    """The faults of a ``TIERMEM_FAULTS``-style spec; ValueError naming the bad item."""
    faults = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        m = _ITEM.match(item)
        if m is None or m["kind"] not in KINDS or int(m["n"]) < 1:
            raise ValueError(
                f"{source}: bad fault {item!r}: expected KIND@[r|w]N[:DURATION] with KIND one "
                f"of {', '.join(KINDS)} and N >= 1, e.g. 'eio@w7,short@r3,delay@5:50ms'"
            )
        delay = 0.0
        if m["kind"] == "delay":
            d = _DURATION.match(m["arg"] or "")
            if d is None:
                raise ValueError(
                    f"{source}: bad fault {item!r}: delay needs a duration such as ':50ms', "
                    "':2s' or ':300us'"
                )
            delay = float(d["value"]) * _UNITS[d["unit"]]
        elif m["arg"] is not None:
            raise ValueError(f"{source}: bad fault {item!r}: only delay takes an argument")
        op = {"r": "read", "w": "write", "": None}[m["op"]]
        faults.append(Fault(kind=m["kind"], nth=int(m["n"]), op=op, delay_s=delay))
    return faults


class FaultPlan:
    """Faults at chosen request numbers, counted over every file wrapped with this plan."""

    def __init__(self, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self.counts = {"read": 0, "write": 0, None: 0}
        self._pending: list[tuple[Fault, int]] = []  # (fault, count it fires at)
        self.fired: list[tuple[Fault, str]] = []  # (fault, "op of N bytes at offset O of PATH")
        self.add(faults or [])

    @classmethod
    def from_env(cls) -> FaultPlan | None:
        """The plan ``TIERMEM_FAULTS`` describes, or None when it is unset or empty."""
        spec = os.environ.get(FAULTS_ENV, "")
        return cls(parse_faults(spec)) if spec.strip() else None

    def add(self, faults: list[Fault] | str) -> None:
        """Plan more faults, their request numbers counted from now."""
        if isinstance(faults, str):
            faults = parse_faults(faults, source="FaultPlan.add")
        with self._lock:
            for f in faults:
                self._pending.append((f, self.counts[f.op] + f.nth))

    def take(self, op: str, where: str) -> Fault | None:
        """Count one ``op`` request; the fault planned for it, if any (fired once)."""
        with self._lock:
            self.counts[op] += 1
            self.counts[None] += 1
            for i, (f, at) in enumerate(self._pending):
                if (f.op is None or f.op == op) and self.counts[f.op] == at:
                    del self._pending[i]
                    self.fired.append((f, where))
                    return f
        return None


def _byte_prefix(buf, nbytes: int):
    """The first ``nbytes`` bytes of a contiguous tensor or array, as a byte view."""
    if isinstance(buf, torch.Tensor):
        return buf.reshape(-1).view(torch.uint8)[:nbytes]
    return buf.reshape(-1).view(np.uint8)[:nbytes]


class _InjectedError:
    """A request that failed at submission (nothing transferred)."""

    def __init__(self, op: str, offset: int, nbytes: int, error: OSError) -> None:
        self.op, self.offset, self.nbytes = op, offset, nbytes
        self.path = error.filename
        self._error = error

    def done(self) -> bool:
        return True

    def wait(self) -> int:
        raise self._error


class _Wrapped:
    """A real request whose completion is reported late, or fails as short."""

    def __init__(self, req, *, nbytes: int, report: int | None, ready_at: float) -> None:
        self._req = req
        self.op, self.offset, self.nbytes, self.path = req.op, req.offset, nbytes, req.path
        self._report = report
        self._ready_at = ready_at

    def done(self) -> bool:
        return time.monotonic() >= self._ready_at and self._req.done()

    def wait(self) -> int:
        left = self._ready_at - time.monotonic()
        if left > 0:
            time.sleep(left)
        got = self._req.wait()
        if self._report is None:
            return got
        # [Note: raised here as AioRequest.wait raises a short transfer, so the
        #  store sees an injected short count exactly as it would a real one.]
        raise OSError(
            errno_mod.EIO,
            f"short {self.op}: {self._report} of {self.nbytes} bytes at offset {self.offset} of "
            f"{self.path} (injected fault)",
            str(self.path),
        )


class FaultyAioFile:
    """An :class:`~tiermem.aio.AioFile` that misbehaves where ``plan`` says.

    Everything but :meth:`submit_read` / :meth:`submit_write` (and the
    synchronous :meth:`read_into` / :meth:`write` built on them) goes
    straight to the wrapped file.
    """

    def __init__(self, file: AioFile, plan: FaultPlan) -> None:
        self.file = file
        self.plan = plan

    def __getattr__(self, name: str):
        return getattr(self.file, name)

    def _submit(self, op: str, buf, offset: int):
        _, nbytes = buffer_address(buf, writable=op == "read")
        where = f"{op} of {nbytes} bytes at offset {offset} of {self.file.path}"
        fault = self.plan.take(op, where)
        submit = self.file.submit_read if op == "read" else self.file.submit_write
        if fault is None:
            return submit(buf, offset)
        if fault.kind in _ERRNOS:
            code = _ERRNOS[fault.kind]
            error = OSError(
                code, f"{os.strerror(code)}: {where} (injected fault {fault})", str(self.file.path)
            )
            return _InjectedError(op, offset, nbytes, error)
        if fault.kind == "short":
            half = nbytes // 2
            req = submit(_byte_prefix(buf, half), offset)
            return _Wrapped(req, nbytes=nbytes, report=half, ready_at=0.0)
        if fault.kind == "kill":
            submit(buf, offset)
            os.kill(os.getpid(), signal.SIGKILL)
        ready_at = time.monotonic() + fault.delay_s
        return _Wrapped(submit(buf, offset), nbytes=nbytes, report=None, ready_at=ready_at)

    def submit_read(self, buf, offset: int = 0):
        """Start reading into ``buf`` (or fail, fall short or lag as planned)."""
        return self._submit("read", buf, offset)

    def submit_write(self, buf, offset: int = 0):
        """Start writing ``buf`` (or fail, fall short or lag as planned)."""
        return self._submit("write", buf, offset)

    def read_into(self, buf, offset: int = 0) -> int:
        return self.submit_read(buf, offset).wait()

    def write(self, buf, offset: int = 0) -> int:
        return self.submit_write(buf, offset).wait()

    def __repr__(self) -> str:
        return f"FaultyAioFile({self.file!r})"
