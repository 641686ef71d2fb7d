"""A tiermem/DeepSpeed JSON resolved against Hugging Face ``TrainingArguments``.

The Trainer owns the batch sizes, the accumulation, clipping, the optimizer's
hyperparameters and the precision flags; the JSON may leave each of them out
or write ``"auto"`` and gets the Trainer's value, as transformers does for
DeepSpeed. A value the JSON sets explicitly must agree with the Trainer's (a
:class:`~tiermem.engine.config.ConfigError` lists every disagreement), since
the Trainer's data loader and loop follow ``TrainingArguments`` whatever the
JSON says.

[Note: left-out keys are filled too, not only ``"auto"`` ones (transformers
fills only ``"auto"`` for DeepSpeed): a JSON without ``gradient_clipping``
would otherwise train without clipping while ``max_grad_norm`` says 1.0, and
one without batch sizes would make the engine count samples the Trainer's
loader does not deliver.]

Duck-typed on ``args``: nothing here imports transformers.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from typing import Any

# [Note: the engine's own JSON reader (duplicate keys and NaN refused, errors naming
#  the file), so a path is read once and checked like tiermem.initialize checks it.]
from tiermem.engine.config import ConfigError, load_json, parse_config

__all__ = ["ARGS_OPTIMIZERS", "ARGS_STATE_DTYPES", "resolve_trainer_config"]

#: ``TrainingArguments.optim`` values that tiermem's own AdamW stands in for when
#: the JSON has no ``optimizer`` section, and the moment storage each asks for
#: (bitsandbytes' 8-bit AdamW -> tiermem's int8 states: block-wise dynamic
#: quantization, run by the fused CPU kernel instead of bitsandbytes).
ARGS_STATE_DTYPES = {
    "adamw_torch": "fp32",
    "adamw_torch_fused": "fp32",
    "adamw_bnb_8bit": "int8",
    "adamw_8bit": "int8",
}
ARGS_OPTIMIZERS = frozenset(ARGS_STATE_DTYPES)

_AUTO = "auto"


def _load(config: Any) -> tuple[dict[str, Any], str | None]:
    """The JSON as a fresh dict (validated first, so errors name the key) and its file."""
    if isinstance(config, str | os.PathLike):
        file = os.fspath(config)
        raw = load_json(file)  # read once; its errors name the file
        try:
            parse_config(raw)
        except ConfigError as err:
            raise err.with_file(file) from None
        return raw, file
    if isinstance(config, Mapping):
        parse_config(config)
        return copy.deepcopy(dict(config)), None
    raise ConfigError(
        f"tiermem_config: expected a dict or the path of a JSON file, got {type(config).__name__}"
    )


def _same(given: Any, wanted: Any) -> bool:
    if isinstance(wanted, bool) or isinstance(given, bool):
        return given is wanted
    if isinstance(wanted, list | tuple):
        return isinstance(given, list | tuple) and [float(v) for v in given] == [
            float(v) for v in wanted
        ]
    try:
        return float(given) == float(wanted)
    except (TypeError, ValueError):
        return False


class _Filler:
    """Fills left-out and ``"auto"`` keys of a raw config dict; records disagreements."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw
        self.mismatches: list[tuple[str, Any, str, Any]] = []

    def _section(self, path: list[str]) -> dict[str, Any]:
        node = self.raw
        for key in path:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        return node

    def fill(self, dotted: str, wanted: Any, field: str, *, only_auto: bool = False) -> None:
        """Set ``dotted`` to ``wanted`` when left out (unless ``only_auto``) or ``"auto"``."""
        *parents, key = dotted.split(".")
        node = self._section(parents)
        given = node.get(key)
        if given == _AUTO or (given is None and not only_auto):
            node[key] = list(wanted) if isinstance(wanted, tuple) else wanted
        elif given is not None and not only_auto and not _same(given, wanted):
            self.mismatches.append((dotted, given, field, wanted))


def resolve_trainer_config(config: Any, args: Any, *, num_training_steps: int) -> dict[str, Any]:
    """The config dict to build the engine with for a Trainer run of ``num_training_steps``.

    ``config`` is a dict or a JSON file path (tiermem's/DeepSpeed's keys,
    docs/config.md); ``args`` a ``transformers.TrainingArguments``. Filled
    from ``args`` when left out or ``"auto"``: ``train_micro_batch_size_per_gpu``
    (``per_device_train_batch_size``), ``gradient_accumulation_steps``,
    ``train_batch_size`` (their product times ``world_size``),
    ``gradient_clipping`` (``max_grad_norm``), ``fp16.enabled``/``bf16.enabled``
    (``fp16``/``bf16``) and the optimizer's ``lr``, ``betas``, ``eps``,
    ``weight_decay`` (``learning_rate``, ``adam_beta1``/``adam_beta2``,
    ``adam_epsilon``, ``weight_decay``); without an ``optimizer`` section,
    AdamW with those (``args.optim`` must be an AdamW of torch's, or
    ``adamw_bnb_8bit``/``adamw_8bit``, which give int8 moments). Scheduler
    ``"auto"`` values: ``warmup_min_lr`` 0, ``warmup_max_lr`` the learning
    rate, ``warmup_num_steps`` ``args.get_warmup_steps(num_training_steps)``,
    ``total_num_steps`` ``num_training_steps``. ZeRO bucket sizes stay
    ``"auto"`` for the engine (derived from the model's hidden size).

    Raises:
        ConfigError: the config is invalid, or sets a value that disagrees
            with ``args`` (every disagreement is listed).
    """
    raw, file = _load(config)
    if "bfloat16" in raw and "bf16" not in raw:  # the config's alias
        raw["bf16"] = raw.pop("bfloat16")
    filler = _Filler(raw)
    micro = int(args.per_device_train_batch_size)
    accumulation = int(args.gradient_accumulation_steps)
    filler.fill("train_micro_batch_size_per_gpu", micro, "per_device_train_batch_size")
    filler.fill("gradient_accumulation_steps", accumulation, "gradient_accumulation_steps")
    filler.fill(
        "train_batch_size",
        micro * accumulation * int(args.world_size),
        "per_device_train_batch_size * gradient_accumulation_steps * world_size",
    )
    filler.fill("gradient_clipping", float(args.max_grad_norm), "max_grad_norm")
    filler.fill("fp16.enabled", bool(args.fp16), "fp16")
    filler.fill("bf16.enabled", bool(args.bf16), "bf16")
    if raw.get("optimizer") is None:
        optim = str(getattr(args.optim, "value", args.optim))
        if optim not in ARGS_OPTIMIZERS:
            raise ConfigError(
                f"TrainingArguments.optim={optim!r}: tiermem runs AdamW itself; set optim to one "
                f"of {sorted(ARGS_OPTIMIZERS)} or give the config an AdamW/Adam section",
                path="optimizer",
                file=file,
            )
        state_dtype = ARGS_STATE_DTYPES[optim]
        params = {} if state_dtype == "fp32" else {"state_dtype": state_dtype}
        raw["optimizer"] = {"type": "AdamW", "params": params}
    lr = float(args.learning_rate)
    filler.fill("optimizer.params.lr", lr, "learning_rate")
    filler.fill(
        "optimizer.params.betas",
        (float(args.adam_beta1), float(args.adam_beta2)),
        "adam_beta1, adam_beta2",
    )
    filler.fill("optimizer.params.eps", float(args.adam_epsilon), "adam_epsilon")
    filler.fill("optimizer.params.weight_decay", float(args.weight_decay), "weight_decay")
    if raw.get("scheduler") is not None:
        steps = int(num_training_steps)
        for key, value in (
            ("warmup_min_lr", 0.0),
            ("warmup_max_lr", lr),
            ("warmup_num_steps", int(args.get_warmup_steps(steps))),
            ("total_num_steps", steps),
        ):
            filler.fill(f"scheduler.params.{key}", value, "", only_auto=True)
    if filler.mismatches:
        listed = "; ".join(
            f"{path} is {given!r} but TrainingArguments {field} gives {wanted!r}"
            for path, given, field, wanted in filler.mismatches
        )
        raise ConfigError(
            f"the config disagrees with TrainingArguments: {listed}; "
            'set these keys to "auto" (or leave them out) or make the two agree',
            path=filler.mismatches[0][0],
            file=file,
        )
    parse_config(raw)  # the filled values are valid too
    return raw
