"""Which configuration file a command uses: --config, $POSTROOM_CONFIG, ./postroom.toml,
/etc/postroom/postroom.toml, else the built-in defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.config.discover import DEFAULTS, ConfigSource, find_config


@pytest.fixture
def system(tmp_path: Path) -> Path:
    """A stand-in for /etc/postroom/postroom.toml that exists."""
    path = tmp_path / "etc" / "postroom.toml"
    path.parent.mkdir()
    path.write_text("")
    return path


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    (path / "postroom.toml").write_text("")
    return path


def test_config_option_wins_over_everything(cwd: Path, system: Path) -> None:
    found = find_config(Path("mine.toml"), {"POSTROOM_CONFIG": "/x.toml"}, cwd, system=system)
    assert found == ConfigSource(cwd / "mine.toml", "--config")


def test_then_the_environment_variable(cwd: Path, system: Path) -> None:
    found = find_config(None, {"POSTROOM_CONFIG": "/srv/p.toml"}, cwd, system=system)
    assert found == ConfigSource(Path("/srv/p.toml"), "POSTROOM_CONFIG")
    assert found.describe() == "/srv/p.toml (from POSTROOM_CONFIG)"


def test_then_postroom_toml_in_the_current_directory(cwd: Path, system: Path) -> None:
    found = find_config(None, {"POSTROOM_CONFIG": ""}, cwd, system=system)
    assert found == ConfigSource(cwd / "postroom.toml", "./postroom.toml")


def test_then_the_system_file(tmp_path: Path, system: Path) -> None:
    assert find_config(None, {}, tmp_path, system=system) == ConfigSource(system, str(system))


def test_else_the_built_in_defaults(tmp_path: Path) -> None:
    found = find_config(None, {}, tmp_path, system=tmp_path / "absent.toml")
    assert found.path is None
    assert str(found) == found.describe() == DEFAULTS


def test_a_named_file_is_used_even_when_missing_so_loading_says_so(tmp_path: Path) -> None:
    """A file named with --config or the variable is never skipped for the next one."""
    (tmp_path / "postroom.toml").write_text("")
    found = find_config(None, {"POSTROOM_CONFIG": "gone.toml"}, tmp_path)
    assert found.path == tmp_path / "gone.toml"
