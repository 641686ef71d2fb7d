"""`tiermem plan`: text and JSON output, rates from a saved bench result, exit codes, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from tiermem import cli
from tiermem.diskbench import mount_of
from tiermem.engine.config import parse_config
from tiermem.planning.machine import bench_result_path, save_bench_result

FOUR = ("no offload", "optimizer on CPU", "optimizer on NVMe", "params and optimizer on NVMe")


def run(capsys, *argv):
    rc = cli.main(["plan", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _trailing_json(text: str) -> dict:
    return json.loads(text[text.index("\n{") + 1 :])


def test_text_plan_lists_every_placement_and_a_parseable_config(tmp_path, capsys):
    rc, out, err = run(capsys, "--model", "tiny", "--no-measure", "--nvme-path", str(tmp_path))
    assert rc == 0, err
    for name in FOUR:
        assert f"\n{name} " in out
    if not torch.cuda.is_available():
        assert "the CPU computes, so the device tier is host memory" in out
    assert "recommended: no offload" in out  # a 0.1M-parameter model fits anywhere
    config = _trailing_json(out)
    parsed = parse_config(config)
    assert parsed.zero_optimization.stage == 3
    assert parsed.zero_optimization.offload_optimizer.device == "none"
    assert "(assumed)" in out  # --no-measure: every rate says so


def test_json_plan(tmp_path, capsys):
    rc, out, _ = run(
        capsys, "--model", "small", "--no-measure", "--json", "--nvme-path", str(tmp_path),
        "--micro-batch", "8", "--dtype", "bf16",
    )  # fmt: skip
    assert rc == 0
    doc = json.loads(out)
    assert doc["schema"] == "tiermem.plan/1"
    assert doc["model"]["num_params"] == 842_496
    assert [p["description"] for p in doc["placements"]] == list(FOUR)
    nvme = doc["placements"][3]
    assert nvme["totals"]["nvme"] > 16 * 842_496  # bf16 shards + 16 B/param of fp32 state
    assert nvme["totals"]["device"] < doc["placements"][0]["totals"]["device"]
    none = doc["placements"][0]
    assert none["activations_per_micro_batch_checkpointed"] < none["activations_per_micro_batch"]
    assert doc["recommended"]["fits"] is True
    assert doc["config"]["bf16"] == {"enabled": True}
    assert doc["config"]["train_micro_batch_size_per_gpu"] == 8
    assert doc["settings"]["dtype"] == "bf16"


def test_nvme_rates_come_from_the_saved_bench_of_that_file_system(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TIERMEM_CACHE_DIR", str(tmp_path / "cache"))
    mount, _ = mount_of(tmp_path)
    save_bench_result(
        {
            "schema": "tiermem.bench/1",
            "mount_point": mount,
            "best": {
                "backend": "threads",
                "block_size": 1 << 20,
                "queue_depth": 8,
                "read_gbps": 4.25,
                "write_gbps": 2.5,
            },  # fmt: skip
            "aio_config": {"aio": {"block_size": 1 << 20, "queue_depth": 8}},
        }
    )
    assert bench_result_path().is_file()
    rc, out, _ = run(
        capsys, "--model", "tiny", "--no-measure", "--json", "--nvme-path", str(tmp_path)
    )
    assert rc == 0
    machine = json.loads(out)["machine"]
    assert machine["rates"]["nvme_read_bytes_per_s"] == pytest.approx(4.25e9)
    assert machine["rates"]["nvme_write_bytes_per_s"] == pytest.approx(2.5e9)
    assert "tiermem bench result" in machine["sources"]["nvme"]


def test_measured_rates(tmp_path, capsys):
    rc, out, _ = run(capsys, "--model", "tiny", "--json", "--nvme-path", str(tmp_path))
    assert rc == 0
    machine = json.loads(out)["machine"]
    assert machine["sources"]["memory"].startswith("measured")
    assert machine["sources"]["flops"].startswith("measured")
    assert machine["rates"]["flops"] > 1e6
    assert list(tmp_path.iterdir()) == []  # the measurement's file is gone


def test_stated_rates_set_the_step_time(tmp_path, capsys):
    args = ["--model", "small", "--json", "--nvme-path", str(tmp_path), "--memory-bandwidth", "10"]
    _, slow, _ = run(capsys, *args, "--flops", "0.001", "--nvme-bandwidth", "1")
    _, fast, _ = run(capsys, *args, "--flops", "0.002", "--nvme-bandwidth", "1")
    slow_none, fast_none = (json.loads(t)["placements"][0] for t in (slow, fast))
    compute = slow_none["step_time_parts"]["compute"]
    assert compute == pytest.approx(2 * fast_none["step_time_parts"]["compute"])
    assert compute == pytest.approx(6 * 842_496 * 128 / 1e9)  # 6 x params x tokens / FLOP/s


def test_nothing_fits_exits_1(tmp_path, capsys):
    rc, out, err = run(
        capsys, "--params", "1e15", "--hidden", "65536", "--layers", "2", "--no-measure",
        "--nvme-path", str(tmp_path),
    )  # fmt: skip
    assert rc == 1
    assert err.strip() == "tiermem plan: no placement fits this machine"
    assert "recommended: nothing fits" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--model", "huge"], ["--model", "invalid choice: 'huge'"]),
        (["--params", "1B"], ["--params needs --hidden and --layers"]),
        (["--hidden", "64"], ["go with --params"]),
        (["--params", "lots", "--hidden", "8", "--layers", "1"], ["not a count"]),
        (["--params", "inf", "--hidden", "8", "--layers", "1"], ["--params", "finite"]),
        (["--params", "nan", "--hidden", "8", "--layers", "1"], ["--params", "finite"]),
        (["--micro-batch", "0"], ["--micro-batch", "at least 1"]),
        (["--model", "tiny", "--hf-config", "x.json"], ["not allowed with argument"]),
        (["--nvme-path", "/nonexistent/dir"], ["--nvme-path", "not a directory"]),
        (["--memory-fraction", "1.5"], ["--memory-fraction", "(0, 1]"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, words):
    rc, out, err = run(capsys, "--no-measure", *argv)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err
    assert "Traceback" not in err and out == ""


def test_malformed_hf_config_names_file_and_field(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 64, "num_hidden_layers": -2, "vocab_size": 100}))
    rc, _, err = run(capsys, "--no-measure", "--hf-config", str(path))
    assert rc == 2
    assert err.strip().splitlines() == [
        f"tiermem plan: --hf-config: {path}: field 'num_hidden_layers': expected a positive "
        "integer, got -2"
    ]


def test_hf_config_plans(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2,
                                "vocab_size": 1000, "n_positions": 128}))  # fmt: skip
    rc, out, _ = run(capsys, "--no-measure", "--json", "--hf-config", str(path))
    assert rc == 0
    model = json.loads(out)["model"]
    assert (model["hidden_size"], model["num_layers"], model["seq_len"]) == (64, 2, 128)


def test_bench_saves_the_rates_plan_then_uses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TIERMEM_CACHE_DIR", str(tmp_path / "cache"))
    bench = ["bench", str(tmp_path), "--size", "4M", "--block-sizes", "1M"]
    assert cli.main([*bench, "--queue-depths", "4", "--backends", "threads", "--json"]) == 0
    best = json.loads(capsys.readouterr().out)["best"]
    rc, out, _ = run(
        capsys, "--model", "tiny", "--no-measure", "--json", "--nvme-path", str(tmp_path)
    )
    assert rc == 0
    machine = json.loads(out)["machine"]
    assert machine["rates"]["nvme_read_bytes_per_s"] == pytest.approx(best["read_gbps"] * 1e9)
    assert (
        machine["sources"]["nvme"]
        == f"tiermem bench result {tmp_path / 'cache' / 'bench-last.json'}"
    )
