"""The size of a model as the planner sees it: parameters, their groups, and activation shape.

A :class:`ModelShape` is plain numbers. It comes from a GPT-style shape
(:func:`gpt_shape`, what ``tiermem train``'s presets are), a parameter count
with hidden size and layer count (:func:`counted_shape`), or a Hugging Face
``config.json`` read with plain :mod:`json` (:func:`hf_config_shape`; no
``transformers`` import).

[Note: the engine makes one flat parameter group per module that registers
parameters (a Linear's weight and bias, a LayerNorm's pair, an embedding), so
the planner keeps the list of group sizes: the largest one sizes the offload
buffers, and each NVMe tensor is rounded up to 4 KiB separately.]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ModelShape",
    "ShapeError",
    "counted_shape",
    "gpt_shape",
    "hf_config_shape",
]


class ShapeError(ValueError):
    """A model description the planner cannot use (names the file and the field)."""


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """What the planner needs to know about a model.

    Attributes:
        name: how to call it in output.
        num_params: distinct parameter elements (tied weights once).
        groups: elements of each engine parameter group (one per module with
            its own parameters); sums to ``num_params``.
        hidden_size: width of the residual stream (0: unknown, no activation estimate).
        num_layers: transformer blocks (0: unknown).
        seq_len: tokens per sequence the activations are estimated for (0: unknown).
        vocab_size: vocabulary (logits size per token; 0: unknown).
        intermediate_size: MLP width (0: ``4 * hidden_size``).
        gated_mlp: the MLP has a gate projection (Llama-style: three matrices).
    """

    name: str = "model"
    num_params: int
    groups: tuple[int, ...] = ()
    hidden_size: int = 0
    num_layers: int = 0
    seq_len: int = 0
    vocab_size: int = 0
    intermediate_size: int = 0
    gated_mlp: bool = False
    source: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for key in ("num_params", "hidden_size", "num_layers", "seq_len", "vocab_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ShapeError(
                    f"ModelShape.{key}: expected a non-negative integer, got {value!r}"
                )
        if self.num_params < 1:
            raise ShapeError(f"ModelShape.num_params: expected at least 1, got {self.num_params}")
        if not self.groups:
            object.__setattr__(self, "groups", (self.num_params,))

    @property
    def largest_group(self) -> int:
        """Elements of the largest parameter group."""
        return max(self.groups)

    @property
    def knows_activations(self) -> bool:
        """Whether hidden size, layers and sequence length are known."""
        return bool(self.hidden_size and self.num_layers and self.seq_len)

    @property
    def mlp_width(self) -> int:
        """The MLP's inner width."""
        return self.intermediate_size or 4 * self.hidden_size

    def describe(self) -> str:
        """One line: name, parameters, layers x hidden, sequence."""
        text = f"{self.name}: {_count(self.num_params)} parameters"
        if self.num_layers and self.hidden_size:
            text += f", {self.num_layers} layers x hidden {self.hidden_size}"
        if self.seq_len:
            text += f", sequence {self.seq_len}"
        if self.vocab_size:
            text += f", vocabulary {self.vocab_size}"
        return text


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def gpt_shape(
    *, name: str, vocab_size: int, hidden_size: int, num_layers: int, seq_len: int
) -> ModelShape:
    """A GPT-2-style model (pre-LN blocks with biases, learned positions, tied LM head):
    the groups the engine makes of :class:`tiermem.train.models.GPT`."""
    h = hidden_size
    block = (2 * h, 3 * h * h + 3 * h, h * h + h, 2 * h, 4 * h * h + 4 * h, 4 * h * h + h)
    groups = (vocab_size * h, seq_len * h, *block * num_layers, 2 * h)
    return ModelShape(
        name=name,
        num_params=sum(groups),
        groups=groups,
        hidden_size=h,
        num_layers=num_layers,
        seq_len=seq_len,
        vocab_size=vocab_size,
    )


def counted_shape(
    *,
    num_params: int,
    hidden_size: int,
    num_layers: int,
    seq_len: int = 2048,
    vocab_size: int = 50304,
    name: str = "custom",
) -> ModelShape:
    """A model known by its parameter count, hidden size and layer count.

    The groups are guessed as a GPT's (the embedding, then four matrices per
    block, the rest spread over them), which is what sizes the buffers.
    """
    for key, value in (
        ("num_params", num_params),
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("seq_len", seq_len),
        ("vocab_size", vocab_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ShapeError(f"{key}: expected a positive integer, got {value!r}")
    h = hidden_size
    embedding = min(vocab_size * h, num_params)
    rest = num_params - embedding
    per_layer = rest // num_layers
    # a block's four matrices in GPT-2's proportions 3:1:4:4
    block = [per_layer * k // 12 for k in (3, 1, 4, 4)]
    block[-1] += per_layer - sum(block)
    groups = [embedding, *([g for g in block if g] * num_layers)]
    leftover = num_params - sum(groups)
    if leftover > 0:  # what integer division left over: the final norm, say
        groups.append(leftover)
    return ModelShape(
        name=name,
        num_params=num_params,
        groups=tuple(g for g in groups if g > 0),
        hidden_size=h,
        num_layers=num_layers,
        seq_len=seq_len,
        vocab_size=vocab_size,
    )


# Hugging Face config keys, in the order they are tried (GPT-2 uses its own names).
_HF_KEYS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "num_heads": ("num_attention_heads", "n_head", "num_heads"),
    "vocab_size": ("vocab_size",),
    "seq_len": ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len"),
    "intermediate_size": ("intermediate_size", "n_inner", "ffn_dim"),
    "num_kv_heads": ("num_key_value_heads",),
}
_GATED = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo")


def _hf_int(raw: dict, field_name: str, path: str, *, required: bool) -> int:
    for key in _HF_KEYS[field_name]:
        if key in raw and raw[key] is not None:
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ShapeError(
                    f"{path}: field {key!r}: expected a positive integer, got {value!r}"
                )
            return value
    if required:
        names = " or ".join(repr(k) for k in _HF_KEYS[field_name])
        raise ShapeError(f"{path}: missing field {names} (a Hugging Face config.json?)")
    return 0


def hf_config_shape(path: str | os.PathLike, *, seq_len: int | None = None) -> ModelShape:
    """The shape of the model a Hugging Face ``config.json`` describes.

    Reads ``hidden_size``/``n_embd``, ``num_hidden_layers``/``n_layer``,
    ``num_attention_heads``, ``num_key_value_heads``, ``vocab_size``,
    ``intermediate_size``/``n_inner``, ``max_position_embeddings``/``n_positions``,
    ``model_type`` and ``tie_word_embeddings``. Llama-style model types
    (:data:`_GATED`) get a gated MLP without biases and RMSNorm; the rest GPT-2's
    layout. Raises :class:`ShapeError` naming the file and the field.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ShapeError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ShapeError(f"{p}: is a directory (pass its config.json)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ShapeError(f"{p}: cannot read: {exc}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ShapeError(
            f"{p}: not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(raw, dict):
        raise ShapeError(f"{p}: expected a JSON object, got {type(raw).__name__}")
    where = os.fspath(p)
    h = _hf_int(raw, "hidden_size", where, required=True)
    layers = _hf_int(raw, "num_layers", where, required=True)
    vocab = _hf_int(raw, "vocab_size", where, required=True)
    heads = _hf_int(raw, "num_heads", where, required=False) or 1
    kv_heads = _hf_int(raw, "num_kv_heads", where, required=False) or heads
    seq = seq_len or _hf_int(raw, "seq_len", where, required=False) or 2048
    inter = _hf_int(raw, "intermediate_size", where, required=False) or 4 * h
    if h % heads:
        raise ShapeError(
            f"{where}: field 'num_attention_heads' ({heads}) does not divide the hidden size {h}"
        )
    model_type = str(raw.get("model_type", "") or "")
    gated = model_type in _GATED
    tied = raw.get("tie_word_embeddings", not gated)
    if gated:
        kv = h // heads * kv_heads
        block = (h, h * h, h * kv, h * kv, h * h, h, h * inter, h * inter, h * inter)
        groups = [vocab * h, *block * layers, h]
    else:
        block = (2 * h, 3 * h * h + 3 * h, h * h + h, 2 * h, h * inter + inter, inter * h + h)
        groups = [vocab * h, seq * h, *block * layers, 2 * h]
    if not tied:
        groups.append(vocab * h)
    return ModelShape(
        name=str(raw.get("_name_or_path") or model_type or p.parent.name or "model"),
        num_params=sum(groups),
        groups=tuple(groups),
        hidden_size=h,
        num_layers=layers,
        seq_len=seq,
        vocab_size=vocab,
        intermediate_size=inter,
        gated_mlp=gated,
        source={"config": where, "model_type": model_type},
    )
