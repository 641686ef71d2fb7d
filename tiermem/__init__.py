"""tiermem: a memory-tiering runtime for PyTorch training.

Tensors are paged between GPU memory, pinned host memory and NVMe by a native
C core (io_uring/O_DIRECT async I/O, SIMD CPU Adam). Importing tiermem never
fails because of the native library; its first use raises
:class:`tiermem.NativeLibraryError` naming what went wrong.
"""

from tiermem._native import NativeLibraryError, native
from tiermem.adam import CPUAdam

__version__ = "0.1.0"

__all__ = ["CPUAdam", "NativeLibraryError", "init_context", "initialize", "native", "__version__"]


def initialize(*args, **kwargs):
    """Wrap a model for ZeRO training, like ``deepspeed.initialize``.

    See :func:`tiermem.engine.initialize`; returns
    ``(engine, optimizer, dataloader, lr_scheduler)``.
    """
    # [Note: imported here, not at the top: the core never imports the engine
    #  at import time (layers point native <- core <- engine <- CLI).]
    from tiermem.engine import initialize as _initialize

    return _initialize(*args, **kwargs)


def init_context(*args, **kwargs):
    """Build a model partitioned as it is created, like ``deepspeed.zero.Init``.

    See :func:`tiermem.engine.init_context`. Hugging Face models (transformers
    imported before the context is created) get exactly the weights an eager
    build gives: see :mod:`tiermem.hf.model_init`.
    """
    from tiermem.engine import init_context as _init_context
    from tiermem.hf.model_init import module_init_methods

    kwargs.setdefault("module_inits", module_init_methods())
    return _init_context(*args, **kwargs)
