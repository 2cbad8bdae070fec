"""pyproject.toml bounds every dependency from above, and constraints.txt (what
scripts/install installs) pins each of them to a version inside those bounds."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parent.parent


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    listed = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        listed.extend(extra)
    return [Requirement(line) for line in listed]


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: not a pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize("requirement", requirements(), ids=str)
def test_every_dependency_has_an_upper_bound(requirement: Requirement) -> None:
    assert any(spec.operator in ("<", "~=", "==") for spec in requirement.specifier)


@pytest.mark.parametrize("requirement", requirements(), ids=str)
def test_the_lock_pins_every_dependency_within_its_bounds(requirement: Requirement) -> None:
    version = pinned().get(canonicalize_name(requirement.name))
    assert version is not None, f"{requirement.name} is not in constraints.txt: run scripts/lock"
    assert requirement.specifier.contains(version), f"{requirement.name}=={version}"
