"""fp16/bf16 sections: the "bfloat16" alias, exclusivity, fp16 loss-scale settings."""

import pytest

from tiermem.engine.config import ConfigError, parse_config


def test_bfloat16_is_an_alias_of_bf16():
    assert parse_config({"bfloat16": {"enabled": True}}).bf16.enabled is True
    assert "bfloat16" not in parse_config({"bfloat16": {"enabled": True}}).to_dict()


def test_bf16_and_bfloat16_together_is_an_error():
    with pytest.raises(ConfigError) as info:
        parse_config({"bf16": {"enabled": True}, "bfloat16": {"enabled": True}})
    assert '"bf16"' in str(info.value) and '"bfloat16"' in str(info.value)


def test_fp16_and_bf16_cannot_both_be_enabled():
    with pytest.raises(ConfigError) as info:
        parse_config({"fp16": {"enabled": True}, "bf16": {"enabled": True}})
    assert info.value.path == "bf16.enabled"
    # "auto" on both is fine: the engine picks at most one from the model's dtype
    parse_config({"fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"}})


def test_static_and_dynamic_loss_scale():
    assert parse_config({"fp16": {"enabled": True}}).fp16.dynamic_loss_scale
    static = parse_config({"fp16": {"enabled": True, "loss_scale": 128}}).fp16
    assert not static.dynamic_loss_scale and static.loss_scale == 128.0
