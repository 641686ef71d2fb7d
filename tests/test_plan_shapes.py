"""The planner's model shapes: presets, the engine's groups, Hugging Face config.json files."""

from __future__ import annotations

import json

import pytest

from tiermem.engine.auto_placement import model_shape
from tiermem.planning import ShapeError, counted_shape, gpt_shape, hf_config_shape
from tiermem.train.models import GPT, PRESETS


def _preset_shape(name: str):
    c = PRESETS[name]
    return gpt_shape(
        name=name,
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_layers,
        seq_len=c.seq_len,
    )


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_counts(name):
    assert _preset_shape(name).num_params == PRESETS[name].num_parameters


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_preset_groups_are_the_engines(name):
    observed = model_shape(GPT(PRESETS[name]))
    predicted = _preset_shape(name)
    assert observed.groups == predicted.groups
    assert (observed.hidden_size, observed.num_layers, observed.seq_len) == (
        predicted.hidden_size,
        predicted.num_layers,
        predicted.seq_len,
    )


def _write(tmp_path, doc, name="config.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


GPT2 = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768,
        "n_layer": 12, "n_head": 12, "n_inner": None}  # fmt: skip
LLAMA2_7B = {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
             "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "max_position_embeddings": 4096,
             "tie_word_embeddings": False}  # fmt: skip


def test_hf_config_counts_match_the_published_models(tmp_path):
    gpt2 = hf_config_shape(_write(tmp_path, GPT2, "gpt2.json"))
    assert gpt2.num_params == 124_439_808  # GPT-2 small, as transformers counts it
    assert (gpt2.hidden_size, gpt2.num_layers, gpt2.seq_len) == (768, 12, 1024)
    llama = hf_config_shape(_write(tmp_path, LLAMA2_7B, "llama.json"))
    assert llama.num_params == 6_738_415_616  # Llama-2-7b
    assert llama.gated_mlp and llama.largest_group == 32000 * 4096


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", ["not JSON", "line 1"]),
        ("[1, 2]", ["expected a JSON object"]),
        ({"hidden_size": 64, "vocab_size": 10}, ["missing field", "'num_hidden_layers'"]),
        ({"hidden_size": "64", "num_hidden_layers": 2, "vocab_size": 10}, ["'hidden_size'"]),
        (
            {"hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 10, "num_attention_heads": 3},
            ["'num_attention_heads'", "does not divide"],
        ),  # fmt: skip
    ],
)
def test_bad_hf_config_names_file_and_field(tmp_path, content, words):
    path = _write(tmp_path, content)
    with pytest.raises(ShapeError) as info:
        hf_config_shape(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_missing_hf_config(tmp_path):
    with pytest.raises(ShapeError, match="no such file"):
        hf_config_shape(tmp_path / "nope.json")


def test_counted_shape_keeps_the_count():
    shape = counted_shape(num_params=1_300_000_000, hidden_size=2048, num_layers=24)
    assert shape.num_params == 1_300_000_000 == sum(shape.groups)
    assert shape.largest_group == 50304 * 2048
    with pytest.raises(ShapeError, match="hidden_size"):
        counted_shape(num_params=10, hidden_size=0, num_layers=1)
