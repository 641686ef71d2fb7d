"""What every subcommand shares: one entry point, --help each, exit codes 0/1/2, errors as one
line on stderr, a traceback only with --debug (before or after the subcommand)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tiermem import cli, planning


def _commands() -> list[str]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sorted(sub.choices)


def test_the_subcommands_are_there():
    assert {"bench", "doctor", "export", "plan", "train"} <= set(_commands())


@pytest.mark.parametrize("command", _commands())
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    out, err = capsys.readouterr()
    assert info.value.code == 0
    assert out.startswith(f"usage: tiermem {command}")
    assert err == ""


def test_one_entry_point_lists_every_subcommand():
    argv = [sys.executable, "-m", "tiermem.cli", "--help"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for command in _commands():
        assert command in res.stdout


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert "usage: tiermem" in capsys.readouterr().err


def test_unknown_command_is_one_line_exit_2(capsys):
    assert cli.main(["nosuch"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "invalid choice: 'nosuch'" in err


def test_usage_error_one_line_then_traceback_with_debug(tmp_path, capsys):
    argv = ["plan", "--no-measure", "--nvme-path", str(tmp_path / "missing")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    missing = tmp_path / "missing"
    assert err.strip().splitlines() == [f"tiermem plan: --nvme-path: {missing} is not a directory"]
    for debug_argv in (["--debug", *argv], [*argv, "--debug"]):
        with pytest.raises(cli.UsageError, match="not a directory"):
            cli.main(debug_argv)


def test_unexpected_error_one_line_exit_1_then_traceback_with_debug(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("planner exploded")

    monkeypatch.setattr(planning, "plan", broken)
    argv = ["plan", "--model", "tiny", "--no-measure", "--nvme-path", str(tmp_path)]
    assert cli.main(argv) == 1
    out, err = capsys.readouterr()
    assert err == "tiermem: error: planner exploded\n"
    with pytest.raises(RuntimeError, match="planner exploded"):
        cli.main(["--debug", *argv])


def test_debug_traceback_in_a_real_process(tmp_path):
    argv = [sys.executable, "-m", "tiermem.cli", "plan", "--no-measure"]
    argv += ["--nvme-path", str(tmp_path / "missing")]
    plain = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert len(plain.stderr.strip().splitlines()) == 1
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, timeout=60)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "UsageError" in debug.stderr
