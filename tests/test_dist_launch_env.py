"""What a rank reads from torchrun's environment: the process group's timeout and the
rendezvous variables, each bad value an error naming the variable."""

from __future__ import annotations

import datetime

import pytest

from tiermem.engine.comm import init_distributed_from_env, process_group_timeout


def test_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("TIERMEM_DIST_TIMEOUT", raising=False)
    assert process_group_timeout() == datetime.timedelta(minutes=10)
    monkeypatch.setenv("TIERMEM_DIST_TIMEOUT", "2.5")
    assert process_group_timeout() == datetime.timedelta(seconds=2.5)
    for bad in ("0", "-3", "soon", "nan", "inf"):
        monkeypatch.setenv("TIERMEM_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match=f"TIERMEM_DIST_TIMEOUT: .*got '{bad}'"):
            process_group_timeout()


def test_several_ranks_without_a_rendezvous_say_to_use_torchrun(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ValueError, match="WORLD_SIZE is 2 but MASTER_ADDR not set: .*torchrun"):
        init_distributed_from_env()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE: expected a positive integer, got 'two'"):
        init_distributed_from_env()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert init_distributed_from_env() is False  # one process: no process group
