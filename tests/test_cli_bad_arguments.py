"""Bad arguments to every ``tiermem`` subcommand: exit 2, one line on stderr naming the option.

The cases are generated from the parser itself, so a subcommand or option
added later is covered too: an unknown option, each option that checks its
value given a value it must refuse, each option that takes a value given
none, and too many positional arguments. Then the checks the subcommands
make after parsing, and the installed entry point in a real process (no
traceback, exit 2).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from tiermem.cli import build_parser, main

BAD_VALUE = "@@bad@@"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def required_positionals(sub: argparse.ArgumentParser) -> list[str]:
    """Harmless values for the positionals a subcommand requires (they are never used)."""
    return [
        f"pos{i}"
        for i, a in enumerate(sub._actions)
        if not a.option_strings and a.nargs is None and a.required
    ]


def refuses(action: argparse.Action, value: str) -> bool:
    if action.choices is not None:
        return value not in action.choices
    if action.type is None:
        return False
    try:
        action.type(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError):
        return True
    return False


def cases() -> list[tuple[str, list[str], str]]:
    """(id, argv, text the error must contain)."""
    out = []
    for name, sub in subparsers().items():
        pos = required_positionals(sub)
        out.append((f"{name}-unknown-option", [name, *pos, "--no-such-option"], "--no-such-option"))
        out.append((f"{name}-extra-positionals", [name, *pos, "x1", "x2", "x3", "x4"], "x4"))
        for action in sub._actions:
            if not action.option_strings or action.nargs == 0:
                continue
            opt = max(action.option_strings, key=len)
            if refuses(action, BAD_VALUE):
                out.append((f"{name}{opt}-bad-value", [name, *pos, opt, BAD_VALUE], opt))
            out.append((f"{name}{opt}-no-value", [name, *pos, opt], opt))
    return out


CASES = cases()


@pytest.mark.parametrize("argv,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_argument_is_one_line_naming_it(argv, expected, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"tiermem {argv[0]}:") or err.startswith("tiermem:"), err
    assert expected in err and "Traceback" not in err


def test_every_subcommand_is_covered():
    names = {c[1][0] for c in CASES}
    assert {"bench", "doctor", "train"} <= names
    assert names == set(subparsers())


CHECKED_AFTER_PARSING = {
    "bench-block-size": (["bench", "--block-sizes", "1000", "."], "--block-sizes"),
    "bench-queue-depth": (["bench", "--queue-depths", "0", "."], "--queue-depths"),
    "bench-backend": (["bench", "--backends", "floppy", "."], "--backends"),
    "train-resume-no-checkpoint": (["train", "--resume", "--no-checkpoint"], "--resume"),
    "train-config-missing": (["train", "--config", "/nonexistent/ds.json"], "--config"),
    "train-config-directory": (["train", "--config", "/"], "--config"),
    "train-nvme-path-file": (["train", "--nvme-path", "/etc/hostname"], "--nvme-path"),
    "train-nvme-path-missing": (["train", "--nvme-path", "/nonexistent/x"], "--nvme-path"),
    "train-checkpoint-dir-file": (["train", "--checkpoint-dir", "/etc/hostname"], "--checkpoint"),
    "train-report-file": (["train", "--report", "/etc/hostname"], "--report"),
}


@pytest.mark.parametrize("name", sorted(CHECKED_AFTER_PARSING))
def test_values_checked_after_parsing_are_usage_errors(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, expected = CHECKED_AFTER_PARSING[name]
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2, (rc, err)
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"tiermem {argv[0]}:"), err
    assert expected in err
    assert list(tmp_path.iterdir()) == []  # nothing made before refusing


@pytest.mark.parametrize("name", sorted(subparsers()))
def test_installed_entry_point_exits_2_without_traceback(name):
    pos = required_positionals(subparsers()[name])
    res = subprocess.run(
        [sys.executable, "-m", "tiermem.cli", name, *pos, "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()]
    assert "Traceback" not in res.stderr and "--no-such-option" in res.stderr
