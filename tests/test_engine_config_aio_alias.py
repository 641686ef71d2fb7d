"""aio: DeepSpeed's old key "thread_count" (and ds_nvme_tune's "num_threads") mean
intra_op_parallelism; giving two names is an error; the section maps onto AioConfig."""

import pytest

from tiermem.aio import AioConfig
from tiermem.engine.config import ConfigError, parse_config


@pytest.mark.parametrize("old_name", ["thread_count", "num_threads"])
def test_old_name_sets_intra_op_parallelism(old_name):
    cfg = parse_config({"aio": {old_name: 6}})
    assert cfg.aio.intra_op_parallelism == 6
    assert cfg.to_dict()["aio"]["intra_op_parallelism"] == 6
    assert old_name not in cfg.to_dict()["aio"]


@pytest.mark.parametrize(
    "names", [("thread_count", "intra_op_parallelism"), ("thread_count", "num_threads")]
)
def test_two_names_for_one_setting_is_an_error(names):
    with pytest.raises(ConfigError) as info:
        parse_config({"aio": {names[0]: 2, names[1]: 2}})
    assert info.value.path.startswith("aio.")
    for name in names:
        assert f'"{name}"' in str(info.value)


def test_to_aio_config():
    cfg = parse_config(
        {"aio": {"block_size": 262144, "queue_depth": 64, "thread_count": 4, "direct": "off"}}
    )
    aio = cfg.aio.to_aio_config()
    assert isinstance(aio, AioConfig)
    assert (aio.block_size, aio.queue_depth, aio.threads, aio.direct) == (262144, 64, 4, "off")
    # DeepSpeed's default of one thread leaves tiermem's own pool sizing (0 = automatic)
    assert parse_config({}).aio.to_aio_config().threads == 0


def test_bench_output_section_parses():
    # the section `tiermem bench` prints (tiermem/diskbench.py) must be accepted as is
    cfg = parse_config(
        {
            "aio": {
                "block_size": 4194304,
                "queue_depth": 32,
                "intra_op_parallelism": 1,
                "single_submit": False,
                "overlap_events": True,
            }
        }
    )
    assert cfg.aio.queue_depth == 32


def test_use_gds_is_accepted_with_a_warning():
    from tiermem.engine.config import ConfigWarning

    with pytest.warns(ConfigWarning, match="aio.use_gds"):
        cfg = parse_config({"aio": {"use_gds": True}})
    assert cfg.ignored_keys == ("aio.use_gds",)
