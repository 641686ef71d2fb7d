"""Start from a big pretrained Hugging Face model without ever holding it in memory.

::

    from transformers import LlamaForCausalLM
    from tiermem.hf import from_pretrained

    engine, optimizer, _, scheduler = from_pretrained(
        LlamaForCausalLM, "/models/llama-7b", config="ds_config.json"
    )

One call does what ``from_pretrained`` does under DeepSpeed ZeRO-3, in three
steps: read the model's ``config.json`` from the folder, build the model
inside :func:`tiermem.init_context` (each module is partitioned into the
tiers as soon as it is built; transformers' weight init runs on gathered
groups, see :mod:`tiermem.hf.model_init`), :func:`tiermem.initialize` it, and
stream the folder's safetensors shards straight into the tiers with
``engine.load_weights`` (each rank reads only the byte ranges of its own
shards, one group chunk at a time, see :mod:`tiermem.engine.weights_import`).

Memory: the host holds the tiers' budget (the config's offload sizes) plus
what one module needs while it is built or loaded, and the root model's own
parameters and direct children (the embeddings and the output head), which
``initialize`` partitions: about the host budget plus the largest tensor. The
state dict is never assembled and no shard file is read whole.

[Note: ``transformers`` is imported by the caller (the model class comes from
it); this module only needs the class' ``config_class``, so it imports
nothing from transformers itself.]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["from_pretrained"]


def from_pretrained(
    model_class: Any,
    path: str | os.PathLike,
    *,
    config: Any,
    strict: bool = True,
    model_kwargs: dict[str, Any] | None = None,
    **initialize_kwargs: Any,
) -> tuple[Any, Any, Any, Any]:
    """Build ``model_class`` from the Hugging Face folder ``path`` partitioned, and load its
    weights into the tiers; returns what :func:`tiermem.initialize` returns.

    Args:
        model_class: a transformers model class (``LlamaForCausalLM``) or an auto class
            (``AutoModelForCausalLM``): anything with ``from_config`` or a ``config_class``.
        path: a local folder written by ``save_pretrained`` (``config.json`` and
            ``model.safetensors`` or sharded ``model.safetensors.index.json``;
            PyTorch ``.bin`` files work too, memory-mapped).
        config: the tiermem / DeepSpeed config (a dict or a JSON path); ZeRO stage 3.
        strict: refuse a folder whose tensor names do not match the model's (as
            ``load_state_dict``); with False, what the folder lacks keeps its initial value.
        model_kwargs: extra keyword arguments for the model's config (``from_pretrained``'s
            config overrides, e.g. ``{"use_cache": False}``).
        **initialize_kwargs: passed on to :func:`tiermem.initialize` (``optimizer``,
            ``model_parameters``, ``lr_scheduler``, ``training_data``, ``collate_fn``).

    Raises:
        FileNotFoundError: ``path`` is not a folder with a ``config.json``.
        tiermem.engine.weights_import.WeightsMismatchError: the weights do not fit the
            model (names the file and the tensors); nothing was loaded.
    """
    import tiermem

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder}: not a Hugging Face model folder (no config.json); "
            "from_pretrained reads local folders written by save_pretrained"
        )
    model_config = _model_config(model_class, folder, model_kwargs or {})
    with tiermem.init_context(config=config):
        if hasattr(model_class, "from_config") and not hasattr(model_class, "config_class"):
            model = model_class.from_config(model_config)  # an Auto class
        else:
            model = model_class(model_config)
    out = tiermem.initialize(model=model, config=config, **initialize_kwargs)
    engine = out[0]
    try:
        engine.load_weights(folder, strict=strict)
    except BaseException:
        engine.close()
        raise
    return out


def _model_config(model_class: Any, folder: Path, overrides: dict[str, Any]) -> Any:
    config_class = getattr(model_class, "config_class", None)
    if config_class is None:  # an Auto class: AutoConfig picks the type from config.json
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(folder, **overrides)
    return config_class.from_pretrained(folder, **overrides)
