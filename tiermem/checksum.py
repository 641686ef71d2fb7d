"""CRC32C (Castagnoli) checksums of host buffers, for the store's extents.

Example::

    from tiermem.checksum import crc32c

    crc = crc32c(tensor)                    # contiguous CPU tensor
    crc = crc32c(second_half, crc)          # continue: CRC of the concatenation
    assert crc32c(b"123456789") == 0xE3069283

The native library computes it by carry-less multiply folding with AVX-512
VPCLMULQDQ where the CPU and OS support it ("avx512", about twice "sse42"),
else with the SSE4.2 crc32 instruction on three interleaved streams where
the CPU has SSE4.2 and PCLMUL ("sse42", tens of GB/s), else with a byte-wise
table ("scalar"). ``TIERMEM_CRC=avx512|sse42|scalar`` forces one for the
process (an unknown or unsupported value gets the best supported one) and
:func:`impl_name` says which one runs. All give the same CRC. The GIL is
released during the computation.
"""

from __future__ import annotations

import numpy as np
import torch

from tiermem._native import native
from tiermem.aio import buffer_address

__all__ = ["crc32c", "crc32c_raw", "crc32c_scalar", "impl_name"]

_CRC_MAX = 0xFFFFFFFF

Buffer = torch.Tensor | np.ndarray | bytes | bytearray | memoryview


def _check_value(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _CRC_MAX:
        raise ValueError(f"value must be a CRC32C as an int in [0, 2**32), got {value!r}")
    return value


def _pointer(buf: Buffer):
    """(cffi pointer, nbytes) for any supported buffer; the caller keeps buf alive."""
    ffi = native.ffi
    if isinstance(buf, (torch.Tensor, np.ndarray)):
        address, nbytes = buffer_address(buf, writable=False)
        return ffi.cast("const void *", address), nbytes
    if isinstance(buf, (bytes, bytearray, memoryview)):
        view = memoryview(buf)
        if not view.c_contiguous:
            raise ValueError("expected a C-contiguous memoryview")
        if view.nbytes == 0:
            return ffi.NULL, 0
        return ffi.from_buffer("char[]", view), view.nbytes
    raise TypeError(
        "expected a torch.Tensor, numpy.ndarray, bytes, bytearray or memoryview, "
        f"got {type(buf).__name__}"
    )


def crc32c(buf: Buffer, value: int = 0) -> int:
    """CRC32C of the bytes of ``buf``, continuing from ``value`` (0 to start).

    ``buf`` is a contiguous CPU tensor or numpy array (its raw bytes), or
    bytes / bytearray / a C-contiguous memoryview.
    ``crc32c(b, crc32c(a)) == crc32c(a + b)``.
    """
    value = _check_value(value)
    ptr, nbytes = _pointer(buf)
    return int(native.lib.tm_crc32c(value, ptr, nbytes))


def crc32c_scalar(buf: Buffer, value: int = 0) -> int:
    """:func:`crc32c` through the portable table-driven code (the test oracle)."""
    value = _check_value(value)
    ptr, nbytes = _pointer(buf)
    return int(native.lib.tm_crc32c_scalar(value, ptr, nbytes))


def crc32c_raw(ptr: int, nbytes: int, value: int = 0) -> int:
    """CRC32C of ``nbytes`` bytes at address ``ptr``, continuing from ``value``.

    For memory the caller owns (e.g. a pinned host buffer of the store); the
    address must stay valid for the call.
    """
    value = _check_value(value)
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"nbytes must be a non-negative int, got {nbytes!r}")
    if isinstance(ptr, bool) or not isinstance(ptr, int) or ptr < 0:
        raise ValueError(f"ptr must be a non-negative int address, got {ptr!r}")
    if ptr == 0 and nbytes > 0:
        raise ValueError(f"ptr is NULL but nbytes is {nbytes}")
    ffi = native.ffi
    return int(native.lib.tm_crc32c(value, ffi.cast("const void *", ptr), nbytes))


def impl_name() -> str:
    """The implementation :func:`crc32c` uses in this process.

    ``"avx512"``, ``"sse42"`` or ``"scalar"``: chosen on first use from the
    CPU, or forced by ``TIERMEM_CRC``.
    """
    return native.ffi.string(native.lib.tm_crc32c_impl()).decode()
