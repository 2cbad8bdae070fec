"""`pip install postroom` works: the sdist and the wheel built from it
(`python -m build`), the wheel installed with its dependencies into a fresh venv, and
that installation serving mail.

Slow by nature: one test builds and installs once, then checks everything on that
installation. The build runs without isolation, with the build backend the test extra
installs (`setuptools>=77`, as `[build-system]` requires): an isolated build makes two
throwaway environments and costs 10 to 30 s more. Most of what is left is pip resolving
and unpacking the dependencies; its cache makes the downloads free after the first run.
"""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests.support.servers import client_context, start_process, wait_for, write_config

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGE = ROOT / "src" / "postroom"
# What the sdist carries besides the package: a packager builds, tests and installs from it.
SDIST_FILES = (
    "LICENSE",
    "README.md",
    "pyproject.toml",
    "postroom.example.toml",
    "docs/deployment.md",
    "packaging/systemd/postroom.service",
    "packaging/systemd/postroom.sysusers",
    "packaging/systemd/postroom.tmpfiles",
    "tests/conftest.py",
    "src/postroom/store/sqlite/schema.sql",
)


def _run(*command: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, f"{command}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _package_files() -> set[str]:
    """Every file of the package in the source tree, as a path in the wheel."""
    return {
        str(path.relative_to(PACKAGE.parent))
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_fresh_venv_and_serves_mail(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    # The sdist first, then the wheel from the sdist: a file the sdist lacks fails here.
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT)
    version = PROJECT["version"]
    (sdist,) = dist.glob("postroom-*.tar.gz")
    (wheel,) = dist.glob("postroom-*.whl")
    assert sdist.name == f"postroom-{version}.tar.gz"
    assert wheel.name == f"postroom-{version}-py3-none-any.whl"

    with tarfile.open(sdist) as archive:
        in_sdist = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert set(SDIST_FILES) <= in_sdist
    assert not any("__pycache__" in name or "/.peers/" in name for name in in_sdist)
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = set(archive.namelist())
        entry_points = archive.read(f"postroom-{version}.dist-info/entry_points.txt").decode()
    assert _package_files() <= in_wheel  # every module and data file (schema.sql, py.typed)
    assert f"postroom-{version}.dist-info/licenses/LICENSE" in in_wheel
    assert "postroom = postroom.cli:main" in entry_points
    assert "postroom-sendmail = postroom.sendmail:main" in entry_points

    # A venv without pip of its own (fast to make); this pip installs into it, with
    # every dependency, as `pip install postroom` would.
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", wheel)

    assert _run(venv / "bin" / "postroom", "--version").strip() == f"postroom, version {version}"
    where = _run(python, "-c", "import postroom; print(postroom.__file__)", cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv)  # the installed copy, not the source tree
    assert "usage: postroom-sendmail" in _run(venv / "bin" / "postroom-sendmail", "--help")

    data = tmp_path / "data"
    config = write_config(tmp_path / "postroom.toml", data)
    postroom = (venv / "bin" / "postroom", "--config", config)
    _run(*postroom, "domain", "add", "example.test")
    subprocess.run(
        [*map(str, postroom), "user", "add", "app@example.test", "--password-stdin"],
        input="pw-12345678\n",
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    server = start_process(config, tmp_path / "postroom.log", python=str(python))
    try:
        with smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=10) as client:
            client.starttls(context=client_context(data))
            client.login("app@example.test", "pw-12345678")
            reply = client.sendmail(
                "app@example.test",
                ["app@example.test"],
                b"Subject: from the wheel\r\n\r\nInstalled with pip.\r\n",
            )
        assert reply == {}
        new = data / "mail" / "example.test" / "app" / "Maildir" / "new"
        wait_for(lambda: new.is_dir() and any(new.iterdir()))
        (delivered,) = new.iterdir()
        assert b"Subject: from the wheel" in delivered.read_bytes()
        assert f"postroom {version} ready: " in server.log.read_text()
    finally:
        server.kill()
