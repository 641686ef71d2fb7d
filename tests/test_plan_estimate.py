"""The planner's arithmetic on a machine described by hand: fit per tier, pinned bytes,
step time from the stated rates, checkpointing, and the configs it writes."""

from __future__ import annotations

import dataclasses

import pytest

from tiermem.engine.config import parse_config
from tiermem.planning import (
    MachineFacts,
    Placement,
    PlanSettings,
    estimate,
    gpt_shape,
    plan,
    recommended_config,
)

GiB = 1 << 30
SHAPE = gpt_shape(name="1b", vocab_size=50304, hidden_size=2048, num_layers=24, seq_len=2048)
GPU = MachineFacts(
    device_kind="cuda",
    device_name="test GPU",
    device_bytes=24 * GiB,
    host_bytes=64 * GiB,
    nvme_path="/nvme",
    nvme_free_bytes=1000 * GiB,
    nvme_read_bps=2e9,
    nvme_write_bps=1e9,
    memory_bps=1e10,
    device_memory_bps=1e12,
    flops=1e14,
    h2d_bps=2e10,
)
BF16 = PlanSettings(micro_batch_size=1, dtype_bytes=2, model_built_on_host=False)


def test_a_1b_model_on_a_24_gib_gpu_needs_offload():
    result = plan(SHAPE, GPU, BF16)
    by = {e.placement: e for e in result.estimates}
    none = by[Placement.NONE]
    assert not none.fits and any(r.startswith("device:") for r in none.reasons)
    assert none.device.items["fp32 master + Adam moments"] == 12 * SHAPE.num_params
    assert by[Placement.OPTIMIZER_CPU].fits
    assert result.recommended.placement is Placement.OPTIMIZER_CPU  # fits, no disk traffic


def test_pinned_bytes_follow_pin_memory():
    nvme = estimate(SHAPE, GPU, BF16, Placement.PARAMS_OPTIMIZER_NVME)
    budget = nvme.host.items["offload buffers (store host budget)"]
    assert nvme.pinned_bytes == budget > 0
    unpinned = dataclasses.replace(BF16, pin_memory=False)
    assert estimate(SHAPE, GPU, unpinned, Placement.PARAMS_OPTIMIZER_NVME).pinned_bytes == 0
    cpu_only = dataclasses.replace(GPU, device_kind="cpu", device_bytes=0)
    assert estimate(SHAPE, cpu_only, BF16, Placement.PARAMS_OPTIMIZER_NVME).pinned_bytes == 0


def test_step_time_from_the_rates():
    e = estimate(SHAPE, GPU, BF16, Placement.PARAMS_OPTIMIZER_NVME)
    n, b = SHAPE.num_params, 2
    parts = e.time_parts
    assert parts["compute"] == pytest.approx(6 * n * 2048 / 1e14)
    assert parts["nvme_params"] == pytest.approx(2 * b * n / 2e9 + b * n / 1e9)
    assert parts["nvme_optimizer"] == pytest.approx(20 * n / 2e9 + 16 * n / 1e9)
    assert parts["optimizer"] == pytest.approx((16 + 12 + b) * n / 1e10)
    assert e.serial_seconds == pytest.approx(sum(parts.values()))
    overlapped = max(parts["compute"] + parts["host_device_copies"], parts["nvme_params"])
    assert e.seconds == pytest.approx(overlapped + max(parts["optimizer"], parts["nvme_optimizer"]))


def test_checkpointing_rescues_a_long_sequence():
    long = dataclasses.replace(BF16, micro_batch_size=8)
    e = estimate(SHAPE, GPU, long, Placement.PARAMS_OPTIMIZER_NVME)
    tokens, h, layers = 8 * 2048, 2048, 24
    per_block = tokens * (10 * h + 2 * 4 * h) * 2  # bf16 values a block keeps
    # checkpointed: each block keeps its input, one block is live at a time
    assert e.activations - e.activations_checkpointed == (
        layers * per_block - (layers * tokens * h * 2 + per_block)
    )
    assert e.fits and e.needs_checkpointing
    assert all(r.startswith("without activation checkpointing: device") for r in e.reasons)
    assert e.time_parts["compute"] == pytest.approx(8 * SHAPE.num_params * 8 * 2048 / 1e14)


def test_no_nvme_path_rules_out_nvme():
    no_disk = dataclasses.replace(GPU, nvme_path=None, nvme_free_bytes=0)
    e = estimate(SHAPE, no_disk, BF16, Placement.OPTIMIZER_NVME)
    assert not e.fits and "nvme: no nvme_path given" in e.reasons


@pytest.mark.parametrize("placement", list(Placement), ids=lambda p: p.name.lower())
def test_recommended_config_parses_and_says_the_placement(placement):
    settings = dataclasses.replace(BF16, placements=(placement,))
    roomy = dataclasses.replace(GPU, device_bytes=1000 * GiB, host_bytes=1000 * GiB)
    config = recommended_config(plan(SHAPE, roomy, settings), aio={"queue_depth": 16})
    cfg = parse_config(config)
    zero = cfg.zero_optimization
    assert (zero.offload_param.device, zero.offload_optimizer.device) == (
        placement.param_device,
        placement.optimizer_device,
    )
    assert cfg.bf16.enabled is True
    if placement is Placement.PARAMS_OPTIMIZER_NVME:
        assert zero.offload_param.buffer_size == SHAPE.largest_group
        assert zero.offload_param.nvme_path == ("/nvme",)
    assert ("aio" in config) == placement.uses_nvme


def test_ranks_on_one_machine_share_host_memory_and_disk():
    one = estimate(SHAPE, GPU, BF16, Placement.OPTIMIZER_NVME)
    eight = dataclasses.replace(BF16, world_size=8, ranks_per_host=8)
    shared = estimate(SHAPE, GPU, eight, Placement.OPTIMIZER_NVME)
    per_rank = estimate(
        SHAPE, GPU, dataclasses.replace(eight, ranks_per_host=1), Placement.OPTIMIZER_NVME
    )
    assert shared.needed["host"] == 8 * per_rank.needed["host"]
    assert shared.needed["nvme"] == 8 * per_rank.needed["nvme"]
    assert shared.needed["device"] == per_rank.needed["device"]  # one GPU each
    assert per_rank.needed["host"] < one.needed["host"]  # each rank holds 1/8 of the state
