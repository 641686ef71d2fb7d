"""What ``tiermem.init_context`` needs to know about Hugging Face models.

transformers initialises a model's weights after building its modules:
``post_init()`` -> ``init_weights()`` -> ``initialize_weights()``, which walks
the modules children first and calls ``PreTrainedModel._initialize_weights``
(and so the model's ``_init_weights``) on each, then ties the embeddings.
Inside ``init_context`` most of those modules are already partitioned, so the
engine runs each of these calls with the module's parameters (and its direct
children's) gathered in fp32: the random numbers are drawn in the same order
and on the same full tensors as in an eager build, and the weights come out
bit for bit the same for the same seed.

[Note: transformers' own route for this, its DeepSpeed ZeRO-3 branch
(``is_deepspeed_zero3_enabled``), skips the constructors' default inits and so
changes the random stream; it also imports deepspeed. tiermem leaves that
switch off and hooks the per-module init function instead, which every model
class inherits (``PreTrainedModel`` is the only class defining it).]

Nothing here imports transformers unless it is imported already.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["module_init_methods"]


def module_init_methods() -> tuple[tuple[Any, ...], ...]:
    """``(class, method)`` pairs for :class:`tiermem.engine.zero_init.InitContext`'s
    ``module_inits``: Hugging Face's per-module weight init, when transformers is loaded."""
    if "transformers" not in sys.modules:
        return ()
    from transformers.modeling_utils import PreTrainedModel

    if "_initialize_weights" not in PreTrainedModel.__dict__:  # a transformers we do not know
        raise RuntimeError(
            "tiermem.init_context: this transformers version has no "
            "PreTrainedModel._initialize_weights, so models built in the context would "
            "keep uninitialised weights; build the model outside init_context"
        )
    return ((PreTrainedModel, "_initialize_weights", _already_initialized),)


def _already_initialized(module: Any) -> bool:
    """``_initialize_weights`` returns at once for a module marked initialised (a nested
    model's ``post_init`` ran first): no gather, so no read or write of its tiers."""
    return bool(getattr(module, "_is_hf_initialized", False))
