"""Tiny random Hugging Face models of seven architectures (built from configs, no download),
with a batch for each, for the init_context and loading tests.

Each builds in well under a second on CPU and exercises something ``init_context``
must get right: tied embeddings (GPT2, T5, BERT's MLM decoder), rotary buffers
(Llama, Mistral, Qwen2, Mixtral), custom ``_init_weights`` (GPT2's scaled
projections, T5's per-module factors, BERT's buffers), MoE experts stored as bare
3-D parameters (Mixtral), an encoder-decoder (T5), a pooler and token-type
embeddings (BERT).
"""

from __future__ import annotations

from typing import Any

import pytest

transformers = pytest.importorskip(
    "transformers",
    reason="transformers is not installed (pip install 'tiermem[hf]'; scripts/bootstrap does)",
)

import torch  # noqa: E402

VOCAB, SEQ, BATCH = 64, 8, 2
_DECODER = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32,
)


def _spec(name: str) -> tuple[type, Any]:
    t = transformers
    if name == "gpt2":
        return t.GPT2LMHeadModel, t.GPT2Config(
            n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32
        )
    if name == "llama":
        return t.LlamaForCausalLM, t.LlamaConfig(**_DECODER)
    if name == "mistral":
        return t.MistralForCausalLM, t.MistralConfig(**_DECODER)
    if name == "qwen2":
        return t.Qwen2ForCausalLM, t.Qwen2Config(**_DECODER, tie_word_embeddings=True)
    if name == "mixtral":
        return t.MixtralForCausalLM, t.MixtralConfig(
            **_DECODER, num_local_experts=4, num_experts_per_tok=2
        )
    if name == "bert":
        return t.BertForPreTraining, t.BertConfig(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
            max_position_embeddings=32,
        )
    if name == "t5":
        return t.T5ForConditionalGeneration, t.T5Config(
            vocab_size=VOCAB,
            d_model=32,
            d_kv=8,
            d_ff=48,
            num_layers=2,
            num_heads=4,
            decoder_start_token_id=0,
            pad_token_id=0,
        )
    raise KeyError(name)


ARCHITECTURES = ("gpt2", "llama", "mistral", "qwen2", "bert", "t5", "mixtral")


def build(name: str, seed: int = 0) -> torch.nn.Module:
    """The tiny ``name`` model, built with ``torch.manual_seed(seed)`` first."""
    cls, config = _spec(name)
    torch.manual_seed(seed)
    return cls(config)


def batch(name: str, step: int = 0) -> dict[str, torch.Tensor]:
    """The keyword arguments of one training forward of ``name`` (loss in ``.loss``)."""
    gen = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(1, VOCAB, (BATCH, SEQ), generator=gen)
    out = {"input_ids": ids, "labels": ids.clone()}
    if name == "bert":
        out["next_sentence_label"] = torch.randint(0, 2, (BATCH,), generator=gen)
    return out
