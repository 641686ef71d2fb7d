"""Strings and 0/1 that DeepSpeed's pydantic sections accept are read as DeepSpeed reads them.

DeepSpeed parses ``zero_optimization`` (with its offload sections), ``fp16`` and
``bf16`` with pydantic models in lax mode: ``"true"``, ``"no"`` or ``1`` for a
true/false key, ``"16"`` for an integer, ``"1e-3"`` for a number. tiermem takes
the same values there, with one warning naming each; elsewhere (``aio``, the
top level, the optimizer), where DeepSpeed reads values with ``dict.get`` and a
string ``"false"`` would be true, they stay errors.
"""

from __future__ import annotations

import pytest

from tiermem.engine.config import ConfigError, ConfigWarning, parse_config


def test_pydantic_sections_read_strings_and_bits_as_deepspeed_does():
    raw = {
        "zero_optimization": {
            "stage": "3",
            "overlap_comm": "false",
            "contiguous_gradients": 1,
            "reduce_bucket_size": "500000",
            "offload_param": {"device": "cpu", "pin_memory": "Yes", "buffer_count": " 4 "},
            "offload_optimizer": {"device": "cpu", "pin_memory": "off"},
        },
        "fp16": {"enabled": "true", "loss_scale": "0", "hysteresis": "3", "min_loss_scale": "0.5"},
    }
    with pytest.warns(ConfigWarning) as caught:
        cfg = parse_config(raw)
    z = cfg.zero_optimization
    assert (z.stage, z.overlap_comm, z.contiguous_gradients) == (3, False, True)
    assert z.reduce_bucket_size == 500_000
    assert (z.offload_param.pin_memory, z.offload_param.buffer_count) == (True, 4)
    assert z.offload_optimizer.pin_memory is False
    assert cfg.fp16.enabled is True and cfg.fp16.hysteresis == 3
    assert (cfg.fp16.loss_scale, cfg.fp16.min_loss_scale) == (0.0, 0.5)
    text = " ".join(str(w.message) for w in caught)
    for key in ("zero_optimization.overlap_comm", "zero_optimization.offload_param.pin_memory"):
        assert key in text, text
    assert "fp16.enabled" in text and '"true" as true' in text, text


def test_bf16_enabled_as_a_string():
    with pytest.warns(ConfigWarning, match=r"bf16\.enabled"):
        cfg = parse_config({"bf16": {"enabled": "True"}})
    assert cfg.bf16.enabled is True


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"zero_optimization": {"overlap_comm": "maybe"}}, "zero_optimization.overlap_comm"),
        ({"zero_optimization": {"stage": "3.0"}}, "zero_optimization.stage"),
        ({"zero_optimization": {"overlap_comm": 2}}, "zero_optimization.overlap_comm"),
        ({"fp16": {"loss_scale": "nan"}}, "fp16.loss_scale"),
        ({"aio": {"single_submit": "false"}}, "aio.single_submit"),
        ({"train_micro_batch_size_per_gpu": "4"}, "train_micro_batch_size_per_gpu"),
        ({"optimizer": {"type": "Adam", "params": {"lr": "1e-3"}}}, "optimizer.params.lr"),
    ],
)
def test_other_strings_stay_errors(raw, path):
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert path in str(err.value)


def test_no_warning_without_lenient_values(recwarn):
    parse_config(
        {"zero_optimization": {"stage": 2, "overlap_comm": True}, "bf16": {"enabled": 1 > 0}}
    )
    assert not [w for w in recwarn if issubclass(w.category, ConfigWarning)]
