"""`tiermem export` exit codes: 0 with the file (or HF folder) written, 2 for bad arguments
and an existing OUT without --force, 1 for a missing or corrupt checkpoint or --hf on a model
without a config; each error one line on stderr naming the file."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from zero_helpers import config, make_model

import tiermem
from tiermem.cli import main


@pytest.fixture(scope="module")
def saves(tmp_path_factory):
    root = tmp_path_factory.mktemp("saves")
    engine, *_ = tiermem.initialize(model=make_model(), config=config(stage=3))
    engine.save_checkpoint(root)
    full = engine.full_state_dict()
    engine.close()
    return root, full


def _run(argv, capsys):
    rc = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    if rc:
        assert len(err.strip().splitlines()) == 1, err
    return rc, out, err


def test_export_ok_then_exists_then_force(saves, tmp_path, capsys):
    root, full = saves
    out = tmp_path / "m.safetensors"
    rc, stdout, _ = _run([root, out], capsys)
    assert rc == 0 and f"{out}: {len(full)} tensors" in stdout
    got = load_file(out)
    assert all(got[k].equal(v) for k, v in full.items())

    out.write_bytes(b"keep")
    rc, _, err = _run([root, out, "--dtype", "bf16"], capsys)
    assert rc == 2 and str(out) in err and "--force" in err
    assert out.read_bytes() == b"keep"
    rc, _, _ = _run([root, out, "--dtype", "bf16", "--force"], capsys)
    assert rc == 0 and str(load_file(out)["wte.weight"].dtype) == "torch.bfloat16"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dtype", "fp8"], "--dtype"),
        (["--max-shard-size", "1M"], "--max-shard-size needs --hf"),
        (["--max-shard-size", "lots", "--hf"], "--max-shard-size"),
        (["--tag", "../up"], "tag"),
    ],
)
def test_bad_arguments_exit_2(saves, tmp_path, capsys, args, needle):
    rc, _, err = _run([saves[0], tmp_path / "o", *args], capsys)
    assert rc == 2 and needle in err
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_checkpoints_exit_1(saves, tmp_path, capsys):
    rc, _, err = _run([tmp_path / "absent", tmp_path / "o"], capsys)
    assert rc == 1 and "absent: no such checkpoint directory" in err
    rc, _, err = _run([saves[0], tmp_path / "o", "--tag", "global_step9"], capsys)
    assert rc == 1 and "global_step9: no such checkpoint" in err

    bad = tmp_path / "bad"
    bad.mkdir()
    src = saves[0] / "global_step0"
    for f in src.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    data = bytearray((bad / "rank00000.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (bad / "rank00000.safetensors").write_bytes(bytes(data))
    rc, _, err = _run([bad, tmp_path / "o"], capsys)
    assert rc == 1 and "rank00000.safetensors: CRC32C" in err
    assert not (tmp_path / "o").exists()

    rc, _, err = _run([saves[0], tmp_path / "o", "--hf"], capsys)
    assert rc == 1 and "no model config recorded" in err


def test_hf_folder_sharded(saves, tmp_path, capsys):
    root, full = saves
    manifest_dir = tmp_path / "ckpt"
    engine, *_ = tiermem.initialize(model=_with_config(make_model()), config=config(stage=3))
    engine.save_checkpoint(manifest_dir)
    engine.close()
    rc, stdout, _ = _run([manifest_dir, tmp_path / "hf", "--hf", "--max-shard-size", "16K"], capsys)
    assert rc == 0, stdout
    index = json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(full)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["model_type"] == "tiny"


class _Config:
    def to_dict(self):
        return {"model_type": "tiny"}


def _with_config(model):
    model.config = _Config()
    return model
