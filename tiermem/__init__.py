"""tiermem: a memory-tiering runtime for PyTorch training.

Tensors are paged between GPU memory, pinned host memory and NVMe by a native
C core (io_uring/O_DIRECT async I/O, SIMD CPU Adam). Importing tiermem never
fails because of the native library; its first use raises
:class:`tiermem.NativeLibraryError` naming what went wrong.
"""

from tiermem._native import NativeLibraryError, native
from tiermem.adam import CPUAdam

__version__ = "0.1.0"

__all__ = ["CPUAdam", "NativeLibraryError", "native", "__version__"]
