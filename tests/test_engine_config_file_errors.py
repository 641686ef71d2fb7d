"""Config files: errors name the file; JSON syntax errors name line and column."""

import json
import pathlib

import pytest

from tiermem.engine.config import ConfigError, parse_config


def write(tmp_path, text, name="ds_config.json"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_file_path_str_and_pathlike(tmp_path):
    config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 2}}
    path = write(tmp_path, json.dumps(config))
    assert parse_config(str(path)) == parse_config(config)
    assert parse_config(pathlib.Path(path)) == parse_config(config)


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"gradient_clipping": 1.0}')
    assert parse_config(path).gradient_clipping == 1.0


def test_missing_file_names_it(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        parse_config(str(path))
    assert info.value.file == str(path)
    assert str(info.value) == f"{path}: config file not found"


def test_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory") as info:
        parse_config(tmp_path)
    assert info.value.file == str(tmp_path)


def test_syntax_error_names_line_and_column(tmp_path):
    text = '{\n  "train_batch_size": 8,\n  "gradient_clipping": 1.0\n  "fp16": {}\n}\n'
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        parse_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid JSON at line 4, column 3")
    assert "delimiter" in message


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, '{"zero_optimization": {"stage": 2, "stage": 3}}')
    with pytest.raises(ConfigError, match='key "stage" appears twice') as info:
        parse_config(path)
    assert info.value.file == str(path)


def test_nan_is_not_json(tmp_path):
    path = write(tmp_path, '{"gradient_clipping": NaN}')
    with pytest.raises(ConfigError, match="NaN is not valid JSON"):
        parse_config(path)


def test_value_errors_from_a_file_name_file_and_key(tmp_path):
    path = write(tmp_path, json.dumps({"zero_optimization": {"stage": 3, "aio": {}}}))
    with pytest.raises(ConfigError) as info:
        parse_config(path)
    assert info.value.file == str(path) and info.value.path == "zero_optimization.aio"
    assert str(info.value).startswith(f"{path}: zero_optimization.aio: ")


def test_top_level_json_array_is_refused(tmp_path):
    path = write(tmp_path, "[1, 2]")
    with pytest.raises(ConfigError, match="expected an object") as info:
        parse_config(path)
    assert info.value.file == str(path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_config(path)
