"""The systemd unit, sysusers and tmpfiles snippets in packaging/systemd are what
systemd accepts, and make a `postroom` user that owns the data directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from postroom.alerts.service import Alerts
from postroom.config.settings import LimitSettings

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging" / "systemd"
UNIT = PACKAGING / "postroom.service"
INSTALLED_COMMAND = "/opt/postroom/bin/postroom"  # where docs/deployment.md installs it


def _systemd_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} missing: CI must install the systemd package")
        pytest.skip(f"{name} is not installed (apt-get install systemd)")
    return path


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


def _unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _systemd_tool("systemd-analyze")
    text = UNIT.read_text()
    # verify checks that ExecStart's program exists: point it at this installation's.
    assert text.count(INSTALLED_COMMAND) == 1
    here = Path(sys.executable).parent / "postroom"
    unit = tmp_path / "postroom.service"
    unit.write_text(text.replace(INSTALLED_COMMAND, str(here)))
    result = _run(analyze, "verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # warnings too (unknown keys, bad values)


def test_the_unit_is_hardened_and_reloads_with_sighup() -> None:
    settings = _unit_settings(UNIT.read_text())
    assert settings["User"] == ["postroom"]
    assert settings["ExecStart"] == [
        f"{INSTALLED_COMMAND} serve --config /etc/postroom/postroom.toml"
    ]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ReadWritePaths"] == ["/var/lib/postroom"]
    assert settings["PrivateTmp"] == ["yes"]


def test_the_stop_timeout_outlasts_the_longest_stop_at_the_default_grace() -> None:
    """A stop takes at most twice ``limits.shutdown_grace`` (sessions, then
    deliveries) and the last alerts' send timeout; systemd must not kill it sooner."""
    (timeout,) = _unit_settings(UNIT.read_text())["TimeoutStopSec"]
    assert timeout.endswith("s")
    longest = 2 * LimitSettings().shutdown_grace + Alerts.SEND_TIMEOUT
    assert float(timeout[:-1]) >= longest + 10  # and room for the store's close


def test_sysusers_and_tmpfiles_make_a_postroom_user_owning_the_data_directory(
    tmp_path: Path,
) -> None:
    sysusers = _systemd_tool("systemd-sysusers")
    tmpfiles = _systemd_tool("systemd-tmpfiles")
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: giving the directories their owner needs it")
        pytest.skip("giving the directories their owner needs root")
    (tmp_path / "etc").mkdir()
    root = f"--root={tmp_path}"
    made = _run(sysusers, root, str(PACKAGING / "postroom.sysusers"))
    assert made.returncode == 0, made.stderr
    created = _run(tmpfiles, "--create", root, str(PACKAGING / "postroom.tmpfiles"))
    assert created.returncode == 0, created.stderr
    _name, _, uid, gid, _, home, _ = next(
        line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("postroom:")
    )
    assert home == "/var/lib/postroom"
    data = (tmp_path / "var" / "lib" / "postroom").stat()
    assert (data.st_uid, data.st_gid, data.st_mode & 0o777) == (int(uid), int(gid), 0o750)
    config = (tmp_path / "etc" / "postroom").stat()
    assert (config.st_uid, config.st_gid, config.st_mode & 0o777) == (0, int(gid), 0o750)
