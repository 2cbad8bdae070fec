"""Build hook: with ``POSTROOM_COMPILE=1`` the modules every accepted message runs
through (``[tool.postroom] compiled`` in pyproject.toml) are compiled with mypyc, and
the wheel carries them as extension modules beside their sources. Unset, the build is
pure Python, as pyproject.toml describes it.

The compiled build needs mypy (mypyc is part of it), a C compiler, Python's headers and
postroom's dependencies installed, since mypyc type-checks the modules against them: it
is built without build isolation, by ``scripts/install --compiled`` (docs/performance.md).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import setup

_ROOT = Path(__file__).resolve().parent


def _compiled_paths() -> list[str]:
    with (_ROOT / "pyproject.toml").open("rb") as file:
        names = tomllib.load(file)["tool"]["postroom"]["compiled"]
    return [str(Path("src", *name.split(".")).with_suffix(".py")) for name in names]


def _extensions() -> list[object]:
    if os.environ.get("POSTROOM_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(_compiled_paths(), opt_level="3"))


setup(ext_modules=_extensions())
