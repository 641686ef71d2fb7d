"""TIERMEM_FAULTS under the engine: an I/O fault in the swap files stops training with one
StoreError naming the swap file and the operation; the steps before it are exact, close()
is clean, and the last checkpoint resumes the run bit for bit (fp32 on CPU).

Parameters and optimizer states are on NVMe with a host budget far below the
model, so every step reads and writes the swap files. The run trains 4 steps
and saves; a new engine with faults loads that checkpoint and trains on until
the fault; a third engine without faults loads it again and must reproduce the
uninterrupted 8-step run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from zero_helpers import make_batches, make_model, nvme_offload_config, train_steps

import tiermem
from tiermem.engine.checkpoint_format import read_latest
from tiermem.faults import FAULTS_ENV
from tiermem.store import StoreError, TierKind

STEPS, SAVED_AT = 8, 4
# [Note: a plan that never fires: the swap files are wrapped, faults are added
#  to the live plan at a chosen moment (FaultPlan.add).]
WRAP_ONLY = "delay@r1000000000:1us"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[float]]:
    """The checkpoint saved after SAVED_AT steps and the losses of all STEPS, uninterrupted."""
    root = tmp_path_factory.mktemp("ckpt")
    swap = tmp_path_factory.mktemp("swap")
    engine, *_ = tiermem.initialize(model=make_model(), config=nvme_offload_config(swap))
    batches = make_batches(STEPS)
    losses = train_steps(engine, batches[:SAVED_AT], [])
    engine.save_checkpoint(root)
    train_steps(engine, batches[SAVED_AT:], losses)
    engine.close()
    return root, losses


def resumed(checkpoint: Path, swap: Path):
    engine, *_ = tiermem.initialize(model=make_model(seed=9), config=nvme_offload_config(swap))
    engine.load_checkpoint(checkpoint)
    assert engine.global_steps == SAVED_AT
    return engine


def assert_resumes_exactly(checkpoint: Path, swap: Path, expected: list[float]) -> None:
    engine = resumed(checkpoint, swap)
    losses = train_steps(engine, make_batches(STEPS)[SAVED_AT:], [])
    engine.close()
    assert losses == expected[SAVED_AT:]


# Request numbers counted from the first step after the load; a step makes
# ~90 reads and ~70 writes.
FAULTS = ["eio@r40", "short@r120", "eio@w60", "short@w150"]


@pytest.mark.parametrize("spec", FAULTS)
def test_fault_stops_training_with_one_error_and_the_checkpoint_resumes(
    tmp_path, monkeypatch, run, spec
):
    checkpoint, expected = run
    monkeypatch.setenv(FAULTS_ENV, WRAP_ONLY)
    engine = resumed(checkpoint, tmp_path / "swap")
    monkeypatch.delenv(FAULTS_ENV)
    plan = engine.placements.stores[0].tier(TierKind.NVME).faults
    plan.add(spec)
    losses: list[float] = []
    with pytest.raises(StoreError) as err:
        train_steps(engine, make_batches(STEPS)[SAVED_AT:], losses)
    ((fault, where),) = plan.fired
    msg = str(err.value)
    op = "reading" if fault.op == "read" else "writing"
    swap_file = where.rsplit(" of ", 1)[1]
    assert f"{op} tensor '" in msg and swap_file in msg, msg
    assert "tiermem_rank0" in swap_file and swap_file.endswith(".swap")
    assert "short" in msg if fault.kind == "short" else f"injected fault {fault}" in msg
    # the steps completed before the fault are the uninterrupted run's, exactly
    assert losses == expected[SAVED_AT : SAVED_AT + len(losses)]
    assert len(losses) < STEPS - SAVED_AT
    engine.close()  # no second error
    assert list((tmp_path / "swap").rglob("*.swap")) == []
    assert_resumes_exactly(checkpoint, tmp_path / "swap2", expected)


def test_fault_during_a_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, run):
    checkpoint, expected = run
    root = tmp_path / "ckpt"
    monkeypatch.setenv(FAULTS_ENV, WRAP_ONLY)
    engine = resumed(checkpoint, tmp_path / "swap")
    monkeypatch.delenv(FAULTS_ENV)
    engine.save_checkpoint(root, tag="good")  # the same state as `checkpoint`
    train_steps(engine, make_batches(STEPS)[SAVED_AT : SAVED_AT + 1], [])
    plan = engine.placements.stores[0].tier(TierKind.NVME).faults
    plan.add("eio@r3")  # the save reads every shard and state back from the swap files
    with pytest.raises(StoreError, match="reading tensor '.*injected fault eio@r3"):
        engine.save_checkpoint(root, tag="bad")
    engine.close()
    assert read_latest(root) == "good" and not (root / "bad").exists()
    # the failed save's staging directory is removed with the error
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []
    assert_resumes_exactly(root, tmp_path / "swap2", expected)


def test_latency_spikes_change_nothing(tmp_path, monkeypatch, run):
    checkpoint, expected = run
    monkeypatch.setenv(FAULTS_ENV, WRAP_ONLY)
    engine = resumed(checkpoint, tmp_path / "swap")
    monkeypatch.delenv(FAULTS_ENV)
    plan = engine.placements.stores[0].tier(TierKind.NVME).faults
    plan.add("delay@r3:150ms,delay@w10:150ms,delay@r100:150ms,delay@w150:150ms")
    assert train_steps(engine, make_batches(STEPS)[SAVED_AT:]) == expected[SAVED_AT:]
    engine.close()
    assert len(plan.fired) == 4
