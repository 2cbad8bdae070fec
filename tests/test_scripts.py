"""scripts/install runs pip only when what the install depends on changed, at the
versions constraints.txt pins (or, with --newest, the newest pyproject.toml allows).

Each test runs the real script in a copy of the project whose ``.venv/bin/python`` is a
stand-in: ``-m pip`` is recorded (and answered with ``$FAKE_PIP_STATUS``), everything
else runs this interpreter, which imports postroom. The real .venv is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ``$FAKE_PYTHON_FLAGS=-S`` runs the interpreter without site-packages: postroom does
# not import, as in a venv whose install was removed or broken.
FAKE_PYTHON = f"""#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    echo "$*" >>"$(dirname "$0")/pip-calls"
    exit "${{FAKE_PIP_STATUS:-0}}"
fi
exec {sys.executable} ${{FAKE_PYTHON_FLAGS:-}} "$@"
"""

# Stands in for the system Python: `-m venv .venv` makes the stand-in venv above.
FAKE_SYSTEM_PYTHON = """#!/bin/sh
[ "$1 $2" = "-m venv" ] || exit 64
mkdir -p "$3/bin"
cp "$(dirname "$0")/fake-python" "$3/bin/python"
echo "$*" >>"$(dirname "$0")/venv-calls"
"""


class Project:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "scripts").mkdir(parents=True)
        shutil.copy2(ROOT / "scripts" / "install", root / "scripts" / "install")
        shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
        shutil.copy2(ROOT / "constraints.txt", root / "constraints.txt")
        tools = root / "tools"
        tools.mkdir()
        for name, text in (("fake-python", FAKE_PYTHON), ("python3", FAKE_SYSTEM_PYTHON)):
            (tools / name).write_text(text)
            (tools / name).chmod(0o755)
        self.system_python = tools / "python3"

    def install(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.root / "scripts" / "install"), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHON": str(self.system_python), **env},
        )

    def pip_calls(self, venv: str = ".venv") -> list[str]:
        calls = self.root / venv / "bin" / "pip-calls"
        lines = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return lines

    def venvs_made(self) -> int:
        made = self.root / "tools" / "venv-calls"
        return len(made.read_text().splitlines()) if made.exists() else 0


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path / "project")


def installed_ok(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "dependencies unchanged" not in done.stdout


def skipped(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stderr
    assert "dependencies unchanged since the last install" in done.stdout


def test_a_fresh_clone_makes_the_venv_and_installs(project: Project) -> None:
    installed_ok(project.install("test"))
    assert project.venvs_made() == 1
    assert project.pip_calls() == [
        "-m pip install --quiet --upgrade pip",
        "-m pip install --quiet -c constraints.txt -e .[fast,test]",
    ]
    assert (project.root / ".venv" / "install-stamp").read_text().endswith("\nfast,test\n")


def test_a_second_install_with_nothing_changed_runs_no_pip(project: Project) -> None:
    installed_ok(project.install("test"))
    project.pip_calls()
    skipped(project.install("test"))
    assert project.pip_calls() == []
    assert project.venvs_made() == 1


def test_the_server_install_after_the_test_install_runs_no_pip(project: Project) -> None:
    installed_ok(project.install("test"))  # scripts/test, then scripts/serve
    project.pip_calls()
    skipped(project.install())
    assert project.pip_calls() == []


def test_asking_for_more_extras_installs_them(project: Project) -> None:
    installed_ok(project.install())
    assert project.pip_calls()[-1] == "-m pip install --quiet -c constraints.txt -e .[fast]"
    installed_ok(project.install("test"))
    assert project.pip_calls()[-1] == "-m pip install --quiet -c constraints.txt -e .[fast,test]"
    skipped(project.install("test"))


def test_a_changed_pyproject_reinstalls(project: Project) -> None:
    installed_ok(project.install())
    project.pip_calls()
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"click>=8.1,<9"', '"click>=8.2,<9"'))
    installed_ok(project.install())
    assert len(project.pip_calls()) == 2
    skipped(project.install())


def test_a_refreshed_constraints_file_reinstalls(project: Project) -> None:
    installed_ok(project.install("test"))
    project.pip_calls()
    constraints = project.root / "constraints.txt"
    constraints.write_text(constraints.read_text() + "six==1.16.0\n")
    installed_ok(project.install("test"))
    assert project.pip_calls()[-1] == "-m pip install --quiet -c constraints.txt -e .[fast,test]"
    skipped(project.install("test"))


def test_newest_installs_what_pyproject_allows_into_its_own_venv_every_time(
    project: Project,
) -> None:
    installed_ok(project.install("test"))
    project.pip_calls()
    for _ in range(2):  # newer versions may have come out: a fresh venv, every time
        (project.root / ".venv-newest" / "left-over").mkdir(parents=True, exist_ok=True)
        installed_ok(project.install("test", "--newest"))
        assert not (project.root / ".venv-newest" / "left-over").exists()
        assert project.pip_calls(".venv-newest")[-1] == (
            "-m pip install --quiet --upgrade --upgrade-strategy eager -e .[fast,test]"
        )
    assert project.venvs_made() == 3
    assert project.pip_calls() == []  # .venv, installed from the lock, is left alone
    skipped(project.install("test"))


def test_a_changed_install_script_reinstalls(project: Project) -> None:
    installed_ok(project.install())
    project.pip_calls()
    script = project.root / "scripts" / "install"
    script.write_text(script.read_text() + "# changed\n")
    installed_ok(project.install())
    assert len(project.pip_calls()) == 2


def test_a_venv_where_postroom_does_not_import_reinstalls(project: Project) -> None:
    installed_ok(project.install())
    project.pip_calls()
    installed_ok(project.install(FAKE_PYTHON_FLAGS="-S"))
    assert len(project.pip_calls()) == 2


def test_force_reinstalls(project: Project) -> None:
    installed_ok(project.install())
    project.pip_calls()
    installed_ok(project.install("--force"))
    assert len(project.pip_calls()) == 2


def test_a_failed_pip_leaves_no_stamp_and_the_next_run_tries_again(project: Project) -> None:
    installed_ok(project.install())
    pyproject = project.root / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n")
    failed = project.install(FAKE_PIP_STATUS="1")
    assert failed.returncode == 1
    assert not (project.root / ".venv" / "install-stamp").exists()
    project.pip_calls()
    installed_ok(project.install())
    assert len(project.pip_calls()) == 2


def test_an_unknown_argument_is_a_one_line_error(project: Project) -> None:
    done = project.install("tests")
    assert done.returncode == 2
    assert done.stderr == (
        "scripts/install: unknown argument: tests (expected: test, --force, --newest, --compiled)\n"
    )
    assert project.venvs_made() == 0
