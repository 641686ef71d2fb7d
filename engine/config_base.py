"""Shared machinery of the DeepSpeed-style JSON config: the ``AUTO`` sentinel,
:class:`ConfigError`, field specifications and the generic section parser.

A config section is a keyword-only frozen dataclass deriving from
:class:`Section`. Each field carries a :class:`Spec` (see :func:`setting`) that
says which JSON values it accepts; ``Section.__post_init__`` coerces the
value (``1e9`` -> ``1000000000``, a list -> a tuple, ``"auto"`` -> ``AUTO``)
and range-checks it, raising :class:`ConfigError` with the field's dotted
path. So a section is validated the same way whether it was parsed from JSON
or constructed directly in Python.

[Note: the parser is hand-written rather than pydantic: pydantic is not a
dependency, and the errors here must name the dotted key path, suggest the
nearest valid key (also across sections: ``aio`` inside ``zero_optimization``
is DeepSpeed issue 1543), and tell the caller what was expected.]
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar


class Auto(enum.Enum):
    """Type of :data:`AUTO`: a value the engine derives from the model/machine."""

    AUTO = "auto"

    def __repr__(self) -> str:
        return "AUTO"


AUTO = Auto.AUTO
"""Sentinel for a JSON ``"auto"``: the engine derives the value (see docs/config.md)."""


class ConfigError(ValueError):
    """A config value is invalid: names the key's dotted path and what was expected.

    Attributes:
        path: dotted key path (``"zero_optimization.aio"``), or None for file-level errors.
        file: the config file, when the config came from one.
        detail: the message without path and file.
    """

    def __init__(self, message: str, *, path: str | None = None, file: str | None = None):
        self.path = path
        self.file = file
        self.detail = message
        parts = [p for p in (file, path) if p]
        super().__init__(": ".join([*parts, message]))

    def with_file(self, file: str) -> ConfigError:
        """The same error, naming ``file`` too."""
        return ConfigError(self.detail, path=self.path, file=file)


class ConfigWarning(UserWarning):
    """A config key DeepSpeed knows but tiermem does not act on (it is ignored)."""


def join_path(parent: str, key: str) -> str:
    """``parent.key``, or ``key`` at the top level."""
    return f"{parent}.{key}" if parent else key


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- specs


@dataclasses.dataclass(frozen=True, kw_only=True)
class Spec:
    """What one config field accepts.

    Attributes:
        kind: ``int``, ``float``, ``bool``, ``choice``, ``paths`` (str or list of
            str -> tuple), ``float_pair`` (list of two numbers -> tuple),
            ``float_or_floats`` (a number, or a list of numbers -> tuple),
            ``section`` (a nested :class:`Section`).
        auto: ``"auto"`` is accepted and kept as :data:`AUTO`.
        nullable: JSON ``null`` is accepted and kept as None.
        lo, hi: inclusive bounds (``lo_open``/``hi_open`` make them exclusive).
        multiple_of: integers must be a multiple of this.
        choices: canonical values of a ``choice`` field (matched case-insensitively
            when ``fold_case``).
        section: the nested section class of a ``section`` field.
        json: False for fields that are derived, not read from JSON.
    """

    kind: str
    auto: bool = False
    nullable: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    multiple_of: int | None = None
    choices: tuple[str, ...] = ()
    fold_case: bool = False
    section: type | None = None
    json: bool = True

    def describe(self) -> str:
        """What is expected, in words (for error messages)."""
        if self.kind == "int":
            text = "an integer" + self._bounds()
            if self.multiple_of:
                text += f" and a multiple of {self.multiple_of}"
        elif self.kind == "float":
            text = "a number" + self._bounds()
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(f'"{c}"' for c in self.choices)
        elif self.kind == "paths":
            text = "a path or a non-empty list of distinct paths"
        elif self.kind == "float_pair":
            text = "a list of two numbers" + self._bounds()
        elif self.kind == "float_or_floats":
            text = "a number or a non-empty list of numbers" + self._bounds()
        elif self.kind == "section":
            text = "an object"
        else:  # pragma: no cover - programming error
            raise AssertionError(self.kind)
        if self.auto:
            text += ' or "auto"'
        if self.nullable:
            text += " or null"
        return text

    def _bounds(self) -> str:
        lo, hi = self.lo, self.hi
        fmt = _fmt_bound
        if lo is not None and hi is not None:
            left = "(" if self.lo_open else "["
            right = ")" if self.hi_open else "]"
            return f" in {left}{fmt(lo)}, {fmt(hi)}{right}"
        if lo is not None:
            return f" {'>' if self.lo_open else '>='} {fmt(lo)}"
        if hi is not None:
            return f" {'<' if self.hi_open else '<='} {fmt(hi)}"
        return ""


def _fmt_bound(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def setting(default: Any = dataclasses.MISSING, *, doc: str = "", **spec: Any) -> Any:
    """A dataclass field with a :class:`Spec` (keyword arguments) as metadata.

    A ``section`` field gets its section class' default instance as default.
    """
    kind_spec = Spec(**spec)
    meta = {"spec": kind_spec, "doc": doc}
    if kind_spec.kind == "section" and default is dataclasses.MISSING:
        return dataclasses.field(default_factory=kind_spec.section, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def spec_of(field: dataclasses.Field) -> Spec | None:
    """The :class:`Spec` of a dataclass field made by :func:`setting`, or None."""
    return field.metadata.get("spec")


def coerce(spec: Spec, value: Any, path: str) -> Any:
    """Check ``value`` against ``spec`` and return its canonical Python form."""
    if spec.kind == "choice" and value == "auto" and "auto" in spec.choices:
        return "auto"  # a real choice (e.g. aio.backend), not the AUTO sentinel
    if value is AUTO or (isinstance(value, str) and value == "auto"):
        if spec.auto:
            return AUTO
        raise ConfigError(f'"auto" is not accepted here; expected {spec.describe()}', path=path)
    if value is None:
        if spec.nullable:
            return None
        raise ConfigError(f"expected {spec.describe()}, got null", path=path)
    handler = _COERCERS[spec.kind]
    return handler(spec, value, path)


def _is_auto(value: Any) -> bool:
    return value is AUTO or (isinstance(value, str) and value == "auto")


def _fail(spec: Spec, value: Any, path: str, extra: str = "") -> ConfigError:
    hint = ""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        hint = f" (a string; write {value.strip().lower()} without quotes)"
    elif isinstance(value, str) and spec.kind in ("int", "float"):
        hint = " (a string; write the number without quotes)"
    return ConfigError(f"expected {spec.describe()}, got {_show(value)}{hint}{extra}", path=path)


def _in_bounds(spec: Spec, x: float) -> bool:
    if spec.lo is not None and (x <= spec.lo if spec.lo_open else x < spec.lo):
        return False
    if spec.hi is not None and (x >= spec.hi if spec.hi_open else x > spec.hi):
        return False
    return True


def _number(spec: Spec, value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(spec, value, path)
    x = float(value)
    if not math.isfinite(x):
        raise _fail(spec, value, path)
    if not _in_bounds(spec, x):
        raise _fail(spec, value, path)
    return x


def _coerce_int(spec: Spec, value: Any, path: str) -> int:
    # [Note: DeepSpeed configs write sizes as 1e9, a JSON float; an integral
    #  float is accepted as the integer it denotes, 1.5 is not.]
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        raise _fail(spec, value, path)
    _number(spec, value, path)
    n = int(value)
    if spec.multiple_of and n % spec.multiple_of:
        raise _fail(spec, value, path)
    return n


def _coerce_float(spec: Spec, value: Any, path: str) -> float:
    return _number(spec, value, path)


def _coerce_bool(spec: Spec, value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(spec, value, path)
    return value


def _coerce_choice(spec: Spec, value: Any, path: str) -> str:
    if isinstance(value, str):
        for choice in spec.choices:
            if value == choice or (spec.fold_case and value.lower() == choice.lower()):
                return choice
    raise _fail(spec, value, path)


def _coerce_paths(spec: Spec, value: Any, path: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str | os.PathLike) else value
    if not isinstance(items, list | tuple) or not items:
        raise _fail(spec, value, path)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str | os.PathLike) or not os.fspath(item).strip():
            raise _fail(spec, value, path)
        text = os.fspath(item)
        if text in out:
            raise ConfigError(f"path {text!r} is listed twice", path=path)
        out.append(text)
    return tuple(out)


def _number_list(spec: Spec, value: Any, path: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise _fail(spec, value, path)
    number_spec = dataclasses.replace(spec, kind="float", auto=False, nullable=False)
    try:
        return tuple(_number(number_spec, v, path) for v in value)
    except ConfigError:
        raise _fail(spec, value, path) from None


def _coerce_float_pair(spec: Spec, value: Any, path: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _fail(spec, value, path)
    first, second = _number_list(spec, value, path)
    return (first, second)


def _coerce_float_or_floats(spec: Spec, value: Any, path: str) -> float | tuple[float, ...]:
    if isinstance(value, list | tuple):
        return _number_list(spec, value, path)
    return _number(spec, value, path)


def _coerce_section(spec: Spec, value: Any, path: str) -> Any:
    assert spec.section is not None
    if not isinstance(value, spec.section):
        raise ConfigError(
            f"expected a {spec.section.__name__} (an object in JSON), got {_show(value)}",
            path=path,
        )
    return value


_COERCERS: dict[str, Callable[[Spec, Any, str], Any]] = {
    "int": _coerce_int,
    "float": _coerce_float,
    "bool": _coerce_bool,
    "choice": _coerce_choice,
    "paths": _coerce_paths,
    "float_pair": _coerce_float_pair,
    "float_or_floats": _coerce_float_or_floats,
    "section": _coerce_section,
}


# --------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
    """Base of every config section (a keyword-only frozen dataclass).

    Class attributes a section may set:
        PATH: the section's dotted path in the JSON (``""`` for the top level).
        ALIASES: old key name -> current name (both given is an error).
        IGNORED: DeepSpeed keys accepted and ignored with a :class:`ConfigWarning`,
            name -> why.
        REPLACED: keys rejected with a pointer to their replacement, name -> hint.
        DELETE: keys DeepSpeed also refuses here and that belong nowhere in this
            section's place, refused with advice to delete them, name -> why.
        UNKNOWN_WARNS: an unknown key that is neither a typo of a known key nor a
            known key in the wrong place is accepted with a :class:`ConfigWarning`
            (the top level: DeepSpeed reads the keys it knows there and ignores
            the rest, where its sections refuse unknown keys).
        LAX: DeepSpeed reads this section with a pydantic model in lax mode, so
            ``"true"``/``"no"``/``1`` are accepted for true/false keys and
            ``"16"``/``"1e-3"`` for numbers; they are read the same way here,
            with one :class:`ConfigWarning` naming each (see :func:`lax_value`).
            Elsewhere such strings are refused with a hint: DeepSpeed reads
            those sections with plain ``dict.get``, where ``"false"`` is true.
    """

    PATH: ClassVar[str] = ""
    ALIASES: ClassVar[Mapping[str, str]] = {}
    IGNORED: ClassVar[Mapping[str, str]] = {}
    REPLACED: ClassVar[Mapping[str, str]] = {}
    DELETE: ClassVar[Mapping[str, str]] = {}
    UNKNOWN_WARNS: ClassVar[bool] = False
    LAX: ClassVar[bool] = False

    @classmethod
    def preprocess(cls, raw: Mapping[str, Any], path: str, ctx: ParseContext) -> Mapping[str, Any]:
        """``raw`` before its keys are checked: deprecated keys DeepSpeed still converts
        rewritten, keys accepted but not acted on noted in ``ctx`` (default: as is)."""
        return raw

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            spec = spec_of(field)
            if spec is None:
                continue
            value = getattr(self, field.name)
            if spec.kind == "bool" and not spec.auto and _is_auto(value):
                # [Note: accelerate's templates write "auto" on true/false keys
                #  (stage3_gather_16bit_weights_on_model_save) and fill them from its
                #  plugin, whose default is DeepSpeed's: so "auto" is the key's default.]
                value = field.default
            value = coerce(spec, value, self.field_path(field.name))
            object.__setattr__(self, field.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field checks of a section; raise :class:`ConfigError`."""

    @classmethod
    def field_path(cls, name: str) -> str:
        """The dotted JSON path of field ``name``."""
        return join_path(cls.PATH, name)

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` for this section's ``key``."""
        return ConfigError(message, path=self.field_path(key))

    @classmethod
    def key_paths(cls, path: str) -> list[str]:
        """Every valid dotted key path (aliases too) of this section under ``path``."""
        out = [join_path(path, alias) for alias in cls.ALIASES]
        for name, spec in cls.json_fields().items():
            sub = join_path(path, name)
            out.append(sub)
            if spec.kind == "section":
                assert spec.section is not None
                out.extend(spec.section.key_paths(sub))
        return out

    @classmethod
    def json_fields(cls) -> dict[str, Spec]:
        """The JSON keys of this section and their specs."""
        out = {}
        for field in dataclasses.fields(cls):
            spec = spec_of(field)
            if spec is not None and spec.json:
                out[field.name] = spec
        return out

    def to_dict(self) -> dict[str, Any]:
        """This section as a JSON-ready dict (AUTO -> "auto", tuples -> lists, None omitted)."""
        out: dict[str, Any] = {}
        for name, spec in self.json_fields().items():
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = to_json_value(spec, value)
        return out


def to_json_value(spec: Spec, value: Any) -> Any:
    """The JSON form of a coerced field value."""
    if value is AUTO:
        return "auto"
    if isinstance(value, Section):
        return value.to_dict()
    if spec.kind == "paths":
        return value[0] if len(value) == 1 else list(value)
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclasses.dataclass
class ParseContext:
    """State of one :func:`parse_section` run.

    Attributes:
        key_index: every valid dotted key path of the whole config, for
            "did you mean" hints across sections.
        ignored: dotted paths of accepted-but-ignored DeepSpeed keys, with why.
    """

    key_index: tuple[str, ...] = ()
    ignored: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    lax: list[tuple[str, Any, Any]] = dataclasses.field(default_factory=list)

    def warn_ignored(self) -> None:
        """Emit one :class:`ConfigWarning` naming every ignored key, and one naming
        every value read leniently (see :attr:`Section.LAX`)."""
        if self.lax:
            read = "; ".join(
                f"{path}: {json.dumps(raw)} as {json.dumps(got)}" for path, raw, got in self.lax
            )
            warnings.warn(
                f"read as DeepSpeed's config models read them (write the JSON value "
                f"itself to silence this): {read}",
                ConfigWarning,
                stacklevel=4,
            )
        if not self.ignored:
            return
        lines = "; ".join(f"{path} ({why})" for path, why in self.ignored)
        warnings.warn(
            f"tiermem accepts but does not act on these DeepSpeed config keys: {lines}",
            ConfigWarning,
            stacklevel=4,
        )


def expect_mapping(value: Any, path: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else a :class:`ConfigError`."""
    if not isinstance(value, Mapping):
        where = path or "the config"
        raise ConfigError(
            f"expected an object ({{...}}) for {where}, got {_show(value)}", path=path
        )
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(f"keys must be strings, got {_show(key)}", path=path)
    return value


def unknown_key_error(
    parent: str, key: str, valid: Iterable[str], key_index: Iterable[str]
) -> ConfigError:
    """A :class:`ConfigError` for an unknown ``key`` under ``parent``, with a suggestion."""
    path = join_path(parent, key)
    elsewhere = [p for p in key_index if p.rsplit(".", 1)[-1] == key and p != path]
    if elsewhere:
        best = min(elsewhere, key=lambda p: p.count("."))
        owner = best.rsplit(".", 1)[0] if "." in best else ""
        inside = f'inside "{parent}"' if parent else "at the top level"
        suggestion = f'"{best}"' if owner else f'the top-level "{best}"'
        where = f'inside "{owner}"' if owner else "at the top level of the config"
        return ConfigError(
            f'unknown key "{key}" {inside}; did you mean {suggestion}? '
            f'"{key}" belongs {where}; a key in the wrong place is never read',
            path=path,
        )
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if not close:
        lowered = {v.lower(): v for v in valid}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    if close:
        return ConfigError(f'unknown key "{key}"; did you mean "{close[0]}"?', path=path)
    return ConfigError(f'unknown key "{key}"; valid keys here: {", ".join(valid)}', path=path)


def collect_keys(
    cls: type[Section], raw: Mapping[str, Any], path: str, ctx: ParseContext
) -> dict[str, Any]:
    """The raw values of ``cls``'s JSON keys in ``raw``, after aliases and checks.

    Unknown keys raise :class:`ConfigError` (with a suggestion); keys in
    ``cls.IGNORED`` are recorded in ``ctx``; keys in ``cls.REPLACED`` raise.
    """
    raw = expect_mapping(raw, path)
    fields = cls.json_fields()
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in fields:
            out[key] = value
        elif key in cls.ALIASES:
            new = cls.ALIASES[key]
            clash = [k for k in raw if k != key and (k == new or cls.ALIASES.get(k) == new)]
            if clash:
                raise ConfigError(
                    f'"{key}" is an old name of "{new}"; give only one of '
                    + ", ".join(f'"{k}"' for k in sorted([key, *clash])),
                    path=join_path(path, key),
                )
            out[new] = value
        elif key in cls.REPLACED:
            raise ConfigError(cls.REPLACED[key], path=join_path(path, key))
        elif key in cls.DELETE:
            raise ConfigError(
                f'{cls.DELETE[key]}; delete "{key}" from "{path}"', path=join_path(path, key)
            )
        elif key in cls.IGNORED:
            ctx.ignored.append((join_path(path, key), cls.IGNORED[key]))
        else:
            valid = [*fields, *cls.ALIASES]
            known = [*valid, *cls.IGNORED, *cls.REPLACED]
            if cls.UNKNOWN_WARNS and not _typo_or_misplaced(key, path, known, ctx.key_index):
                ctx.ignored.append((join_path(path, key), _NOT_DEEPSPEED))
                continue
            raise unknown_key_error(path, key, valid, ctx.key_index)
    return out


_NOT_DEEPSPEED = (
    "not a DeepSpeed config key: DeepSpeed skips keys it does not know here, and so does "
    "tiermem; delete it, or fix its spelling if it was meant to be a real key"
)


def edit_distance(a: str, b: str) -> int:
    """Optimal-string-alignment distance (insertions, deletions, substitutions and swaps of
    neighbours, each 1) between ``a`` and ``b``, case-insensitively."""
    a, b = a.lower(), b.lower()
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def typo_limit(key: str) -> int:
    """Edits within which an unknown key counts as a misspelling: 1 for short keys
    (up to 7 characters), 2 for longer ones."""
    return 1 if len(key) <= 7 else 2


def _typo_or_misplaced(key: str, path: str, known: Iterable[str], key_index: Iterable[str]) -> bool:
    """Whether unknown ``key`` under ``path`` is a misspelt known key or one that belongs
    in another section (both stay errors)."""
    if any(p.rsplit(".", 1)[-1] == key and p != join_path(path, key) for p in key_index):
        return True
    limit = typo_limit(key)
    return any(edit_distance(key, name) <= limit for name in known)


def parse_section(cls: type[Section], raw: Any, path: str, ctx: ParseContext) -> Section:
    """Parse one JSON object into the section dataclass ``cls`` (nested sections too).

    ``raw`` None (absent or JSON null) gives the section's defaults.
    """
    if raw is None:
        raw = {}
    raw = cls.preprocess(expect_mapping(raw, path), path, ctx)
    if cls.LAX:
        raw = _lax_values(cls, raw, path, ctx)
    values = collect_keys(cls, raw, path, ctx)
    for name, spec in cls.json_fields().items():
        if spec.kind == "section" and name in values:
            assert spec.section is not None
            values[name] = parse_section(spec.section, values[name], join_path(path, name), ctx)
    check_required(cls, values)
    return cls(**values)


_LAX_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_LAX_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_LAX_INT = re.compile(r"[+-]?\d+")
_NOT_LAX = object()


def lax_value(kind: str, value: Any) -> Any:
    """``value`` as pydantic's lax mode reads it for a ``kind`` key, or ``_NOT_LAX``.

    Strings only, and 0/1 for true/false: a true/false key takes ``"true"``,
    ``"yes"``, ``"on"``, ``"1"`` (any case) and their opposites; an integer key
    a string of digits; a number key any string Python reads as a finite float.
    """
    if kind == "bool":
        if isinstance(value, str) and value.strip().lower() in _LAX_TRUE | _LAX_FALSE:
            return value.strip().lower() in _LAX_TRUE
        if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
            return bool(value)
    elif kind in ("int", "float") and isinstance(value, str):
        text = value.strip()
        if kind == "int" and _LAX_INT.fullmatch(text):
            return int(text)
        if kind == "float":
            try:
                x = float(text)
            except ValueError:
                return _NOT_LAX
            if math.isfinite(x):
                return x
    return _NOT_LAX


def _lax_values(
    cls: type[Section], raw: Mapping[str, Any], path: str, ctx: ParseContext
) -> Mapping[str, Any]:
    fields = cls.json_fields()
    out = dict(raw)
    for key, value in raw.items():
        spec = fields.get(cls.ALIASES.get(key, key))
        if spec is None or _is_auto(value):
            continue
        got = lax_value(spec.kind, value)
        if got is not _NOT_LAX:
            out[key] = got
            ctx.lax.append((join_path(path, key), value, got))
    return out


def check_required(cls: type[Section], values: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a field of ``cls`` without default missing in ``values``."""
    for field in dataclasses.fields(cls):
        no_default = (
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        )
        if no_default and field.name not in values:
            spec = spec_of(field)
            expected = spec.describe() if spec else "a value"
            raise ConfigError(
                f"required key missing; expected {expected}", path=cls.field_path(field.name)
            )
