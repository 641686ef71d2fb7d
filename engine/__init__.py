"""The ZeRO engine, imported as ``tiermem.engine`` (packaged from ``engine/``).

[Note: the folder sits at the top level as the project layout asks and is
mapped to ``tiermem/engine`` by ``[tool.scikit-build.wheel.packages]``. It is
never imported as a bare ``engine`` module.]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["TiermemEngine", "init_context", "initialize"]


def __getattr__(name: str) -> Any:
    if name == "TiermemEngine":
        from tiermem.engine.engine import TiermemEngine

        return TiermemEngine
    raise AttributeError(f"module 'tiermem.engine' has no attribute {name!r}")


def _check_model_parameters(model: nn.Module, model_parameters: Any) -> Any:
    """``model_parameters`` as a list (param-group dicts with list ``params``), checked.

    [Note: as in DeepSpeed, the optimizer steps only what ``model_parameters``
    holds: a trainable parameter left out is never updated and does not count
    in the gradient-clipping norm (it still gets a gradient), and a param group
    may be empty.]

    [Note: returned as a list because the usual argument is a one-shot iterator
    (``filter(lambda p: p.requires_grad, model.parameters())``) that the check
    would otherwise use up before an optimizer callable sees it.]
    """
    if model_parameters is None:
        return None
    model_parameters = [
        {**item, "params": _param_list(item.get("params", ()))} if isinstance(item, dict) else item
        for item in model_parameters
    ]
    # [Note: like torch.optim, all tensors or all param-group dicts: the engine
    #  reads the dicts' hyperparameters only when every item is one, so a mix
    #  would silently train with the config's.]
    kinds = {isinstance(item, dict) for item in model_parameters}
    if len(kinds) > 1:
        raise TypeError(
            "model_parameters: expected either parameters or param-group dicts "
            '({"params": [...], "lr": ...}), not a mix of both'
        )
    known = {id(p) for p in model.parameters()}
    for item in model_parameters:
        for param in item["params"] if isinstance(item, dict) else [item]:
            if not isinstance(param, torch.Tensor) or id(param) not in known:
                raise ValueError(
                    "model_parameters: every entry must be a parameter of the model "
                    f"(got {type(param).__name__} that the model does not hold)"
                )
    return model_parameters


def _param_list(params: Any) -> list[Any]:
    """A param group's ``params`` as a list; one tensor is a group of one, as in torch.optim
    (``list(tensor)`` would give its rows)."""
    return [params] if isinstance(params, torch.Tensor) else list(params)


def _seed_everything(seed: int) -> None:
    """The config's ``seed``: Python's, NumPy's and torch's (every device's) RNGs.

    [Note: applied at initialize, after the model is built: it fixes dropout
     and the DataLoader's shuffling, not the model's initial weights (seed
     before building the model for those, or load weights).]
    """
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)  # NumPy's legacy seed takes 32 bits
    torch.manual_seed(seed)  # also seeds every CUDA device


def initialize(
    model: nn.Module | None = None,
    optimizer: Any = None,
    model_parameters: Any = None,
    lr_scheduler: Any = None,
    training_data: Any = None,
    config: Any = None,
    *,
    collate_fn: Any = None,
) -> tuple[Any, Any, Any, Any]:
    """Wrap ``model`` for ZeRO training, like ``deepspeed.initialize``.

    Returns ``(engine, optimizer, dataloader, lr_scheduler)``. ``config`` is a
    dict or a JSON file path with DeepSpeed's keys. ``optimizer`` may be a
    torch Adam/AdamW (its hyperparameters are taken over and its
    ``param_groups`` shared), a callable taking the parameters and returning
    one, or None to use the config's ``optimizer`` section. ``lr_scheduler``
    may be a scheduler, a callable taking the optimizer, or None for the
    config's ``scheduler``. ``training_data`` (a Dataset) gives a DataLoader
    with the micro batch size, and a DistributedSampler over the ranks.
    Launched by ``torchrun`` with several ranks, the process group is started
    here if it is not already, and every rank checks that the others were
    given the same config and model (an error names the rank and the key).
    """
    from tiermem.engine.comm import Communicator, init_distributed_from_env
    from tiermem.engine.engine import TiermemEngine
    from tiermem.engine.rank_agreement import agreed_settings

    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if config is None:
        raise ValueError("config: pass a dict or the path of a JSON config")
    init_distributed_from_env()
    comm = Communicator()
    settings = agreed_settings(comm, config, model)
    if settings.raw.seed is not None:
        _seed_everything(settings.raw.seed)
    model_parameters = _check_model_parameters(model, model_parameters)
    client = optimizer
    if client is not None and not isinstance(client, torch.optim.Optimizer):
        if not callable(client):
            raise TypeError("optimizer: expected a torch optimizer, a callable or None")
        params = model_parameters if model_parameters is not None else model.parameters()
        client = client(params)
    from tiermem.engine.zero_init import context_of

    built_in = context_of(model)
    if built_in is not None:
        built_in.check_compatible(settings)
    engine = TiermemEngine(
        model,
        settings,
        comm=comm,
        client_optimizer=client,
        lr_scheduler=lr_scheduler,
        init_context=built_in,
        model_parameters=model_parameters,
    )
    loader = None
    if training_data is not None:
        sampler = None
        if comm.world_size > 1:
            sampler = torch.utils.data.DistributedSampler(
                training_data, num_replicas=comm.world_size, rank=comm.rank
            )
        loader = torch.utils.data.DataLoader(
            training_data,
            batch_size=settings.micro_batch_size,
            sampler=sampler,
            collate_fn=collate_fn,
        )
    return engine, engine.optimizer, loader, engine.lr_scheduler


def init_context(config: Any = None, *, module_inits: Any = (), **kwargs: Any) -> Any:
    """A context in which models are built partitioned (like ``deepspeed.zero.Init``).

    ``with tiermem.init_context(config=cfg): model = MyModel()``; then pass
    ``model`` and the same config to :func:`initialize`. See
    :mod:`tiermem.engine.zero_init`. ``module_inits``: per-module init methods to run
    on gathered parameters (``tiermem.init_context`` passes Hugging Face's).
    """
    from tiermem.engine.zero_init import InitContext

    if "config_dict_or_path" in kwargs:  # deepspeed.zero.Init's name for it
        config = kwargs.pop("config_dict_or_path")
    if kwargs:
        raise TypeError(f"init_context: unexpected arguments {sorted(kwargs)}")
    if config is None:
        raise ValueError("init_context: pass the config (a dict or a JSON file path)")
    return InitContext(config, module_inits=module_inits)
