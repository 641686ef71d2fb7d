"""The size arithmetic and planner of the 4090-sized run (bench/_gpu_check_model.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from _gpu_check_model import (  # noqa: E402
    DISK_BYTES_PER_PARAM,
    GIB,
    LADDER,
    GPTShape,
    MachineFacts,
    build_gpt,
    choose_micro_batch,
    count_params,
    estimate_step_seconds,
    model_tflops,
    parse_shape,
    plan_run,
)

SMALL = [GPTShape(vocab=100, hidden=32, layers=3, heads=4, seq=16),
         GPTShape(vocab=7, hidden=48, layers=1, heads=3, seq=5)]  # fmt: skip


@pytest.mark.parametrize("shape", SMALL, ids=["a", "b"])
def test_param_formula_matches_the_model(shape):
    model = build_gpt(shape, seed=3)
    assert count_params(model) == shape.num_params()
    assert model.lm_head.weight is model.wte.weight  # tied after materialising
    # GPT-2 init: LN weights 1, biases 0, weights small and not all equal
    assert float(model.ln_f.weight.detach().min()) == 1.0
    assert float(model.blocks[0].qkv.bias.detach().abs().max()) == 0.0
    std = float(model.blocks[0].fc.weight.detach().std())
    assert 0.015 < std < 0.025


def test_ladder_sizes_are_the_named_ones():
    sizes = {s.name: s.num_params() / 1e9 for s in LADDER}
    assert sizes["gpt-1.3b"] == pytest.approx(1.3, rel=0.1)
    assert sizes["gpt-2.7b"] == pytest.approx(2.7, rel=0.05)
    assert sizes["gpt-6.7b"] == pytest.approx(6.7, rel=0.05)
    assert sizes["gpt-13b"] == pytest.approx(13.0, rel=0.05)


def _facts(**kw):
    base = dict(
        host_ram_bytes=128 * GIB,
        disk_free_bytes=55 * GIB,
        gpu_budget_bytes=24 * GIB,
        nvme_read_bytes_per_s=3e9,
        nvme_write_bytes_per_s=2e9,
    )
    return MachineFacts(**(base | kw))


def test_disk_bounds_the_model_on_the_lent_machine():
    plan = plan_run(_facts(), steps=3, seconds_left=1e6)
    chosen = plan.chosen
    assert chosen is not None
    assert chosen.disk_bytes == chosen.params * DISK_BYTES_PER_PARAM
    assert chosen.disk_bytes <= 0.85 * 55 * GIB
    bigger = [c for c in plan.candidates if c.params > chosen.params]
    assert bigger and all(c.rejected.startswith("disk:") for c in bigger)
    assert chosen.shape.name == "gpt-2.7b"


def test_time_bounds_the_model_when_little_is_left():
    roomy = plan_run(_facts(disk_free_bytes=10_000 * GIB), steps=3, seconds_left=1e6).chosen
    quick = plan_run(_facts(disk_free_bytes=10_000 * GIB), steps=3, seconds_left=200).chosen
    assert quick is not None and roomy is not None
    assert quick.params < roomy.params
    assert quick.total_seconds <= 0.7 * 200
    slower = plan_run(
        _facts(disk_free_bytes=10_000 * GIB, nvme_read_bytes_per_s=5e8, nvme_write_bytes_per_s=5e8),
        steps=3,
        seconds_left=200,
    ).chosen
    assert slower is None or slower.params < quick.params


def test_host_memory_bounds_the_model():
    plan = plan_run(_facts(host_ram_bytes=32 * GIB, disk_free_bytes=10_000 * GIB), steps=1,
                    seconds_left=1e9)  # fmt: skip
    assert plan.chosen is not None
    assert plan.chosen.host_bytes <= 0.75 * 32 * GIB
    assert any(c.rejected.startswith("host:") for c in plan.candidates)


def test_nothing_fits_gives_none_with_reasons():
    plan = plan_run(_facts(disk_free_bytes=1 * GIB), steps=3, seconds_left=1e6)
    assert plan.chosen is None
    assert all("disk:" in c.rejected for c in plan.candidates)


def test_micro_batch_grows_with_the_gpu_budget():
    shape = parse_shape("gpt-2.7b")
    small, large = choose_micro_batch(shape, 12 * GIB), choose_micro_batch(shape, 80 * GIB)
    assert small is not None and large is not None and small < large
    assert choose_micro_batch(shape, 1 * GIB) is None
    # more tokens per step cost more compute time, nothing else
    facts = _facts()
    assert estimate_step_seconds(shape, 16, facts) > estimate_step_seconds(shape, 1, facts)


def test_model_tflops_is_six_n_t_over_time():
    assert model_tflops(13_000_000_000, 8192, 4.0) == pytest.approx(6 * 13e9 * 8192 / 4.0 / 1e12)


def test_parse_shape_errors_name_what_is_expected():
    assert parse_shape("10,8,1,2,4") == GPTShape(vocab=10, hidden=8, layers=1, heads=2, seq=4)
    with pytest.raises(ValueError, match="gpt-2.7b"):
        parse_shape("gpt-3t")
    with pytest.raises(ValueError, match="integers"):
        parse_shape("a,b,c,d,e")
    with pytest.raises(ValueError, match="multiple of heads"):
        parse_shape("10,8,1,3,4")
    with pytest.raises(ValueError, match="GPTShape.layers"):
        parse_shape("10,8,0,2,4")
