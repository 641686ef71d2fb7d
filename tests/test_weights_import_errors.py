"""Bad weights files give errors naming the file and the tensor, and leave the engine as it
was: missing file, wrong shape, unknown and missing names with strict (and the report
without), a pickle that is not a state dict, a truncated safetensors file, a folder without
weights, an index naming a missing shard, a call after training started."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file
from zero_helpers import config, make_batches, make_model

import tiermem
from tiermem.engine.checkpoint_format import CheckpointCorruptError
from tiermem.engine.weight_sources import WeightsFileError
from tiermem.engine.weights_import import WeightsMismatchError


@pytest.fixture
def changed():
    """Tests that change the weights on purpose append to this."""
    return []


@pytest.fixture
def engine(changed):
    eng, *_ = tiermem.initialize(
        model=make_model(seed=1), config=config(stage=3, offload="cpu", offload_param="cpu")
    )
    before = eng.full_state_dict()
    yield eng
    after = eng.full_state_dict()
    eng.close()
    if not changed:  # every failed load left the weights alone
        assert all(torch.equal(after[k], v) for k, v in before.items())


def _weights() -> dict[str, torch.Tensor]:
    sd = make_model(seed=5).state_dict()
    sd.pop("lm_head.weight")
    return sd


def test_missing_file(engine, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors: no such file"):
        engine.load_weights(tmp_path / "nope.safetensors")


def test_wrong_shape_names_file_and_key(engine, tmp_path):
    sd = _weights()
    sd["blocks.0.fc.weight"] = torch.zeros(3, 5)
    save_file(sd, tmp_path / "w.safetensors")
    with pytest.raises(WeightsMismatchError) as err:
        engine.load_weights(tmp_path / "w.safetensors", strict=False)
    msg = str(err.value)
    assert "w.safetensors" in msg and "'blocks.0.fc.weight' has shape [3, 5]" in msg
    assert "[128, 32]" in msg


def test_unknown_and_missing_keys_strict(engine, tmp_path):
    sd = _weights()
    sd["extra.weight"] = torch.zeros(2)
    del sd["ln_f.bias"]
    save_file(sd, tmp_path / "w.safetensors")
    with pytest.raises(WeightsMismatchError) as err:
        engine.load_weights(tmp_path / "w.safetensors")
    msg = str(err.value)
    assert "w.safetensors" in msg and "'ln_f.bias'" in msg and "'extra.weight'" in msg


def test_non_strict_reports_and_keeps_missing(engine, changed, tmp_path):
    sd = _weights()
    sd["extra.weight"] = torch.zeros(2)
    del sd["ln_f.bias"]
    save_file(sd, tmp_path / "w.safetensors")
    kept = engine.full_state_dict()["ln_f.bias"]
    report = engine.load_weights(tmp_path / "w.safetensors", strict=False)
    changed.append(True)
    assert report.missing_keys == ("ln_f.bias",)
    assert report.unexpected_keys == ("extra.weight",)
    got = engine.full_state_dict()
    assert torch.equal(got["ln_f.bias"], kept)
    assert torch.equal(got["ln_f.weight"], sd["ln_f.weight"])
    assert "ln_f.bias" not in report.loaded and "wte.weight" in report.loaded


def test_not_a_state_dict(engine, tmp_path):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "w.pt")
    with pytest.raises(WeightsFileError, match=r"w\.pt: 'weights' is a list, not a tensor"):
        engine.load_weights(tmp_path / "w.pt")


def test_a_pickle_with_code_is_refused(engine, tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "w.bin").write_bytes(pickle.dumps({"a": Evil()}))
    with pytest.raises(WeightsFileError, match=r"w\.bin: cannot be read as a weights-only"):
        engine.load_weights(tmp_path / "w.bin")


def test_truncated_safetensors(engine, tmp_path):
    save_file(_weights(), tmp_path / "w.safetensors")
    data = (tmp_path / "w.safetensors").read_bytes()
    (tmp_path / "w.safetensors").write_bytes(data[:-100])
    with pytest.raises(CheckpointCorruptError, match=r"w\.safetensors: not a valid safetensors"):
        engine.load_weights(tmp_path / "w.safetensors")


def test_folder_without_weights(engine, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="none of model.safetensors.index.json"):
        engine.load_weights(tmp_path)


def test_index_naming_a_missing_shard(engine, tmp_path):
    save_file(_weights(), tmp_path / "model-00001-of-00002.safetensors")
    index = {"weight_map": {"wte.weight": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match=r"model-00002-of-00002\.safetensors: missing"):
        engine.load_weights(tmp_path)


def test_refused_after_training_started(engine, changed, tmp_path):
    save_file(_weights(), tmp_path / "w.safetensors")
    idx, tgt = make_batches(1)[0]
    engine.backward(engine(idx, tgt))
    engine.step()
    changed.append(True)
    with pytest.raises(RuntimeError, match="before training, or resume with load_checkpoint"):
        engine.load_weights(tmp_path / "w.safetensors")
