"""docs/config.md documents every config key and every accepted-and-ignored DeepSpeed key."""

import pathlib

from tiermem.engine import config_sections
from tiermem.engine.config import TOP_LEVEL_IGNORED, TiermemConfig, all_key_paths
from tiermem.engine.config_sections import OptimizerConfig

DOC = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "config.md").read_text()


def test_every_key_is_documented():
    missing = [path for path in all_key_paths() if f"`{path.rsplit('.', 1)[-1]}`" not in DOC]
    assert not missing, f"keys missing from docs/config.md: {missing}"


def test_every_ignored_key_is_documented():
    ignored = set(TOP_LEVEL_IGNORED) | set(OptimizerConfig.IGNORED_PARAMS)
    for name in dir(config_sections):
        section = getattr(config_sections, name)
        if isinstance(section, type) and issubclass(section, config_sections.Section):
            ignored |= set(section.IGNORED) | set(section.REPLACED)
    ignored |= set(TiermemConfig.REPLACED)
    missing = sorted(key for key in ignored if f"`{key}`" not in DOC)
    assert not missing, f"ignored keys missing from docs/config.md: {missing}"
