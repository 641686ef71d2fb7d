"""Fuzzed configs (hypothesis): tiermem's ConfigError naming the key, never an internal error.

Random edits (known key paths and random ones, any JSON value: wrong types,
nesting where a number belongs, huge and negative numbers, NaN, paths) to a
valid config go through the parser, through ``tiermem.initialize`` (which
then trains a step when it accepts the config) and through ``tiermem train
--config``. Each must either work or raise ConfigError with the key's dotted
path; a TypeError, KeyError or AttributeError from inside is a bug. Random
bytes as a config file are a ConfigError naming the file.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

import tiermem
from tiermem.cli import main
from tiermem.engine.config import ConfigError, TiermemConfig, all_key_paths, parse_config
from tiermem.engine.config_base import Spec
from tiermem.engine.settings import engine_settings

KEYS = all_key_paths()
LEAF_NAMES = sorted({k.rsplit(".", 1)[-1] for k in KEYS})

WORDS = ["auto", "cpu", "nvme", "none", "", "AdamW", "Adam", "WarmupLR", "WarmupCosineLR"]
WORDS += ["io_uring", "threads", "1e9", "true", "/", "relative/dir"]
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, 2, 3, 4096, 10**9, -1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.sampled_from(WORDS),
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(LEAF_NAMES), inner, max_size=3)
    ),
    max_leaves=6,
)
key_paths = st.sampled_from(KEYS) | st.lists(
    st.text(min_size=1, max_size=6) | st.sampled_from(LEAF_NAMES), min_size=1, max_size=3
).map(".".join)
edits = st.lists(st.tuples(key_paths, json_values), min_size=1, max_size=4)

VALID = {
    "train_micro_batch_size_per_gpu": 2,
    "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
    "zero_optimization": {
        "stage": 3,
        "offload_param": {"device": "cpu"},
        "offload_optimizer": {"device": "cpu"},
    },
}


def fuzz(examples: int) -> settings:
    """Reproducible runs (derandomized), no per-example deadline on a shared machine."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )


def apply(base: dict, changes: list[tuple[str, object]]) -> dict:
    cfg = copy.deepcopy(base)
    for path, value in changes:
        node = cfg
        *parents, last = path.split(".")
        for key in parents:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[last] = value
    return cfg


def check_names_a_key(err: ConfigError) -> None:
    event("refused")
    assert err.path or err.detail.startswith("unknown key"), f"no key named: {err}"


@fuzz(300)
@given(edits)
def test_parser_raises_only_config_errors_naming_the_key(changes):
    cfg = apply(VALID, changes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            engine_settings(cfg, world_size=2)
        except ConfigError as err:
            check_names_a_key(err)


@fuzz(100)
@given(json_values)
def test_any_json_document_is_parsed_or_refused(document):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parse_config(document) if isinstance(document, dict) else parse_config(
                {"zero_optimization": document}
            )
        except ConfigError as err:
            check_names_a_key(err)


@fuzz(60)
@given(st.binary(max_size=64))
def test_any_bytes_as_a_config_file_name_the_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "ds.json"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parse_config(path)
        except ConfigError as err:
            assert err.file == str(path) and str(path) in str(err)


# [Note: initialize gets values that are mostly well typed, so that the fuzzing
#  reaches past the parser into placement, store and aio set-up.]
ENGINE_WORDS = ["auto", "cpu", "nvme", "none", "io_uring", "threads", "WarmupLR", "Adam"]
engine_values = st.one_of(
    st.booleans(),
    st.integers(-2, 4),
    st.sampled_from([0, 1, 4096, 1 << 20, 10**9, 2**63]),
    st.floats(-1, 2),
    st.sampled_from(ENGINE_WORDS),
    st.sampled_from(["<nvme>", "<nvme>/sub", "<file>", "<file>/sub", ["<nvme>", "<nvme>/b"]]),
    st.lists(st.floats(0, 1), min_size=2, max_size=2),
)


def _leaf_specs() -> dict[str, Spec]:
    """Each config leaf name -> its spec (a name means the same thing in every section)."""
    out: dict[str, Spec] = {}

    def walk(cls: type) -> None:
        for name, spec in cls.json_fields().items():
            if spec.kind == "section":
                walk(spec.section)
            else:
                out.setdefault(name, spec)

    walk(TiermemConfig)
    return out


def _typed(spec: Spec) -> st.SearchStrategy:
    """Values of the right JSON type, mostly in range, sizes kept small."""
    lo = spec.lo if spec.lo is not None else 0
    if spec.kind == "int":
        sizes = [v for v in (4096, 65536, 1 << 20) if spec.hi is None or v <= spec.hi]
        found = st.integers(int(lo), int(lo) + 8) | st.sampled_from(sizes or [int(lo)])
    elif spec.kind in ("float", "float_or_floats"):
        found = st.floats(lo, spec.hi if spec.hi is not None else lo + 2)
    elif spec.kind == "float_pair":
        found = st.lists(st.floats(lo, spec.hi or 1.0), min_size=2, max_size=2)
    elif spec.kind == "bool":
        found = st.booleans()
    elif spec.kind == "choice":
        found = st.sampled_from(spec.choices)
    else:  # paths
        found = st.sampled_from(["<nvme>", "<nvme>/sub", ["<nvme>/a", "<nvme>/b"]])
    return found | st.just("auto") if spec.auto else found


LEAF_SPECS = _leaf_specs()
# the leaves (sections and the optimizer/scheduler "type", whose choices differ, left out)
ENGINE_KEYS = [k for k in KEYS if k.rsplit(".", 1)[-1] in LEAF_SPECS and not k.endswith("type")]


@st.composite
def engine_edit(draw: st.DrawFn) -> tuple[str, object]:
    key = draw(st.sampled_from(ENGINE_KEYS))
    typed = _typed(LEAF_SPECS[key.rsplit(".", 1)[-1]])
    return key, draw(typed | typed | typed | engine_values)


def _placeholders(value: object, nvme: Path, file: Path) -> object:
    if isinstance(value, list):
        return [_placeholders(v, nvme, file) for v in value]
    if isinstance(value, str):
        return value.replace("<nvme>", str(nvme)).replace("<file>", str(file))
    return value


@fuzz(40)
@given(st.lists(engine_edit(), min_size=1, max_size=3))
def test_initialize_trains_or_raises_config_error(tmp_path_factory, changes):
    root = tmp_path_factory.mktemp("fuzz")
    nvme, file = root / "nvme", root / "file"
    file.write_text("not a directory")
    base = apply(
        VALID,
        [
            ("zero_optimization.offload_param", {"device": "nvme", "nvme_path": str(nvme)}),
            ("zero_optimization.offload_optimizer", {"device": "nvme", "nvme_path": str(nvme)}),
        ],
    )
    cfg = apply(base, [(k, _placeholders(v, nvme, file)) for k, v in changes])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            engine, *_ = tiermem.initialize(model=model, config=cfg)
        except ConfigError as err:
            check_names_a_key(err)
            return
    event("accepted")
    try:
        loss = engine(torch.randn(2, 4, dtype=engine.dtype)).float().sum()
        engine.backward(loss)
        engine.step()
    finally:
        engine.close()
    leftovers = [p for p in nvme.rglob("*") if p.is_file()] if nvme.exists() else []
    assert leftovers == []  # swap files removed at close


@fuzz(15)
@given(edits)
def test_train_config_is_a_one_line_usage_error_or_runs(tmp_path_factory, changes):
    root = tmp_path_factory.mktemp("train")
    path = root / "ds.json"
    path.write_text(json.dumps(apply({}, changes), allow_nan=True))
    argv = ["train", "--model", "tiny", "--steps", "1", "--no-checkpoint"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main([*argv, "--config", str(path), "--nvme-path", str(root)])
    text = err.getvalue()
    event(f"exit {rc}")
    assert rc in (0, 2), text
    assert "Traceback" not in text
    if rc == 2:
        lines = text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tiermem train: config: "), text
        assert str(path) in lines[0]
    assert sorted(p.name for p in root.iterdir()) == ["ds.json"]  # scratch removed
