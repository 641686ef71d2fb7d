"""``model_parameters`` in the forms torch.optim takes: a param group whose ``params`` is one
tensor is a group of that tensor, and a mix of tensors and group dicts is refused (the dicts'
hyperparameters would otherwise be silently replaced by the config's)."""

from __future__ import annotations

import pytest
from zero_helpers import LR, config, make_model

import tiermem


def _one_and_rest(model):
    one = next(p for p in model.parameters() if p.dim() == 2)
    rest = [p for p in model.parameters() if p is not one]
    return one, rest


def test_a_group_of_one_tensor_keeps_its_hyperparameters():
    model = make_model()
    one, rest = _one_and_rest(model)
    groups = [{"params": one, "lr": LR / 4}, {"params": rest}]
    engine, optimizer, _, _ = tiermem.initialize(
        model=model, model_parameters=groups, config=config(stage=1, offload="cpu")
    )
    try:
        lrs = [g["lr"] for g in optimizer.param_groups]
        assert lrs == [LR / 4, LR]
        assert [len(g["params"]) for g in optimizer.param_groups] == [1, len(rest)]
    finally:
        engine.close()


def test_a_mix_of_tensors_and_group_dicts_is_refused():
    model = make_model()
    one, rest = _one_and_rest(model)
    with pytest.raises(TypeError, match="model_parameters: .* not a mix"):
        tiermem.initialize(
            model=model,
            model_parameters=[{"params": [one], "lr": LR / 4}, *rest],
            config=config(stage=1, offload="cpu"),
        )
