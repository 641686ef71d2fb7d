"""optimizer: Adam/AdamW with DeepSpeed's meaning of adam_w_mode."""

import pytest

from tiermem.engine.config import ConfigError, ConfigWarning, parse_config


def optimizer(kind, **params):
    return parse_config({"optimizer": {"type": kind, "params": params}}).optimizer


def test_deepspeed_adam_decouples_weight_decay_by_default():
    # DeepSpeed: ADAM_W_MODE_DEFAULT = True, so "Adam" with weight decay is AdamW
    assert optimizer("Adam", weight_decay=0.1).adamw_mode is True
    assert optimizer("Adam", adam_w_mode=True).adamw_mode is True
    assert optimizer("Adam", adam_w_mode=False).adamw_mode is False
    assert optimizer("AdamW").adamw_mode is True
    assert optimizer("ADAMW").type == "AdamW" and optimizer("adam").type == "Adam"


def test_adamw_with_adam_w_mode_false_stays_adamw_with_a_warning():
    # DeepSpeed: effective_adam_w_mode = (type == AdamW) or adam_w_mode; its test_adamw.py
    # expects ["AdamW", ..., adam_w_mode False] -> an optimizer with adam_w_mode True
    with pytest.warns(ConfigWarning, match='for L2-style decay write "type": "Adam"'):
        assert optimizer("AdamW", adam_w_mode=False).adamw_mode is True


def test_defaults_match_deepspeed():
    opt = optimizer("Adam")
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay, opt.bias_correction) == (
        1e-3,
        (0.9, 0.999),
        1e-8,
        0.0,
        True,
    )
    assert parse_config({"optimizer": {"type": "AdamW"}}).optimizer == optimizer("AdamW")


def test_amsgrad_only_false():
    assert optimizer("Adam", amsgrad=False).type == "Adam"
    with pytest.raises(ConfigError) as info:
        optimizer("Adam", amsgrad=True)
    assert info.value.path == "optimizer.params.amsgrad"


def test_max_grad_norm_is_ignored_and_points_to_gradient_clipping():
    with pytest.warns(ConfigWarning, match="gradient_clipping"):
        opt = optimizer("AdamW", max_grad_norm=1.0)
    assert opt.type == "AdamW"


def test_type_is_required():
    with pytest.raises(ConfigError) as info:
        parse_config({"optimizer": {"params": {"lr": 1e-3}}})
    assert info.value.path == "optimizer.type"
