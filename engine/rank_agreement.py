"""Checks at start-up that every rank was launched the same way; each failure names its rank.

A job launched by ``torchrun`` runs the same script once per rank, and what
goes wrong often goes wrong on one rank only: the config file differs on one
node, ``nvme_path`` is missing or read-only on one node. A rank that raises
alone leaves the others waiting in their next collective until the process
group times out, and then their error says nothing of the cause. So the
steps of start-up that can fail on one rank run through :func:`agree`, and
:func:`check_same_launch` compares digests of the config and the model over
the ranks before anything is sharded.

[Note: ``nvme_path`` is left out of the comparison: every node has its own
NVMe drive and may mount it elsewhere. ``"auto"`` offload devices are
compared as written, before the planner picks them from each node's memory.]
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from tiermem.engine.comm import Communicator
from tiermem.engine.config_base import ConfigError, ConfigWarning

__all__ = [
    "RankFailedError",
    "agree",
    "agreed_settings",
    "check_same_launch",
    "launch_fingerprint",
]

T = TypeVar("T")


class RankFailedError(RuntimeError):
    """A start-up step failed on another rank (its error is in the message)."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _config_keys(config: Any) -> dict[str, Any]:
    from tiermem.engine.config import parse_config

    with warnings.catch_warnings():  # initialize's own parse warns once
        warnings.simplefilter("ignore", ConfigWarning)
        parsed = parse_config(config)
    flat = _flatten(parsed.to_dict())
    return {k: v for k, v in flat.items() if not k.endswith("nvme_path")}


def _model_entries(model: nn.Module | None) -> list[str]:
    if model is None:
        return []
    return [
        f"{name} {tuple(p.shape)} {p.dtype} requires_grad={p.requires_grad}"
        for name, p in model.named_parameters()
    ]


def launch_fingerprint(config: Any, model: nn.Module | None = None) -> dict[str, Any]:
    """What every rank must agree on: the config's keys (but ``nvme_path``) and the
    model's parameter names, shapes and dtypes."""
    return {"config": _config_keys(config), "model": _model_entries(model)}


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _first_config_difference(mine: dict[str, Any], other: dict[str, Any]) -> tuple[str, str, str]:
    for key in sorted(set(mine) | set(other)):
        if mine.get(key, "<unset>") != other.get(key, "<unset>"):
            return key, json.dumps(mine.get(key, "<unset>")), json.dumps(other.get(key, "<unset>"))
    return "", "", ""


def check_same_launch(comm: Communicator, fingerprint: dict[str, Any]) -> None:
    """Raise on every rank when the ranks' :func:`launch_fingerprint` differ.

    Raises:
        ConfigError: the configs differ (names the first key, the values and ranks).
        ValueError: the models differ (names the first parameter).
    """
    if comm.world_size == 1:
        return
    digests = comm.all_gather_bytes(
        (_digest(fingerprint["config"]) + _digest(fingerprint["model"])).encode()
    )
    # every rank gathered the same digests, so every rank takes the same branch below
    if len({d[:64] for d in digests}) > 1:
        configs = [
            json.loads(b)
            for b in comm.all_gather_bytes(json.dumps(fingerprint["config"], default=str).encode())
        ]
        rank = next(r for r, c in enumerate(configs) if c != configs[0])
        key, first, other = _first_config_difference(configs[0], configs[rank])
        raise ConfigError(
            f"the ranks were given different configs: rank {rank} has {other} where "
            f"rank 0 has {first}; launch every rank with the same config "
            "(only nvme_path may differ between nodes)",
            path=key,
        )
    if len({d[64:] for d in digests}) > 1:
        models = [
            json.loads(b) for b in comm.all_gather_bytes(json.dumps(fingerprint["model"]).encode())
        ]
        rank = next(r for r, m in enumerate(models) if m != models[0])
        ours, theirs = models[0], models[rank]
        pairs = zip(ours, theirs, strict=False)
        diff = next(
            (f"rank 0 has {a!r}, rank {rank} has {b!r}" for a, b in pairs if a != b),
            f"rank 0 has {len(ours)} parameters, rank {rank} has {len(theirs)}",
        )
        raise ValueError(
            f"the ranks built different models: {diff}; every rank must build the same model"
        )


def _describe(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ConfigError):
        out.update(detail=exc.detail, path=exc.path, file=exc.file)
    return out


def agree(
    comm: Communicator,
    what: str,
    fn: Callable[[], T],
    *,
    undo: Callable[[T], None] | None = None,
) -> T:
    """Run ``fn`` on every rank; when it raised on any rank, raise on every rank.

    The rank that failed raises its own exception (with a note naming the
    rank); the others raise an error naming the rank that failed and quoting
    its message: a :class:`ConfigError` (same key) when that was one, else
    :class:`RankFailedError`. ``undo`` releases what ``fn`` built on a rank
    that succeeded while another failed.
    """
    result: Any = None
    error: BaseException | None = None
    try:
        result = fn()
    except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
        error = exc
    if comm.world_size == 1:
        if error is not None:
            raise error
        return result
    report = b"" if error is None else json.dumps(_describe(error)).encode()
    reports = comm.all_gather_bytes(report)
    failed = [(r, json.loads(b)) for r, b in enumerate(reports) if b]
    if error is not None:
        error.add_note(f"(on rank {comm.rank} of {comm.world_size}, while {what})")
        raise error
    if not failed:
        return result
    if undo is not None:
        undo(result)
    rank, info = failed[0]
    where = f"rank {rank} of {comm.world_size}"
    if info["type"] == "ConfigError":
        raise ConfigError(f"{where}: {info['detail']}", path=info["path"], file=info["file"])
    others = f" (and rank {', '.join(str(r) for r, _ in failed[1:])})" if failed[1:] else ""
    raise RankFailedError(f"{what} failed on {where}{others}: {info['type']}: {info['message']}")


def agreed_settings(comm: Communicator, config: Any, model: nn.Module | None = None) -> Any:
    """The engine's settings from ``config``, parsed on every rank and checked to be the
    same config (and model) everywhere; an error on any rank is raised on all of them."""
    from tiermem.engine.settings import engine_settings

    def parse() -> tuple[Any, dict[str, Any]]:
        settings = engine_settings(config, world_size=comm.world_size, model=model)
        return settings, launch_fingerprint(config, model)

    settings, fingerprint = agree(comm, "reading the config", parse)
    check_same_launch(comm, fingerprint)
    return settings
