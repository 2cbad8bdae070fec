"""The licence postroom declares is the one it ships: an SPDX expression and the LICENSE
file, as the installed distribution's metadata says (PEP 639)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_installed_metadata_names_the_mit_licence_and_its_file() -> None:
    meta = metadata.metadata("postroom")
    assert meta["License-Expression"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "License" not in meta  # the deprecated free-text field is not used


def test_the_licence_file_is_mit_for_the_postroom_contributors() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 postroom contributors\n")
    assert 'THE SOFTWARE IS PROVIDED "AS IS"' in text
