"""Which configuration file a command uses, found where admins look for a daemon's.

In order: the file named with ``--config`` (or sendmail's ``-C``), else the one named by
the environment variable ``POSTROOM_CONFIG``, else ``postroom.toml`` in the current
directory, else ``/etc/postroom/postroom.toml``, else none: the built-in defaults. A file
that is named (the first two) must exist; the last two are used when they exist. The
same order holds for every command, the server's and the CLI's, and for
``postroom-sendmail``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULTS",
    "ENV_VAR",
    "LOCAL_CONFIG",
    "SEARCHED",
    "SYSTEM_CONFIG",
    "ConfigSource",
    "find_config",
]

ENV_VAR = "POSTROOM_CONFIG"
LOCAL_CONFIG = Path("postroom.toml")
SYSTEM_CONFIG = Path("/etc/postroom/postroom.toml")
DEFAULTS = "built-in defaults"
SEARCHED = f"--config, ${ENV_VAR}, ./{LOCAL_CONFIG}, {SYSTEM_CONFIG}"


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """The file a command reads (absolute), or None for the built-in defaults, and what
    chose it (``--config``, ``POSTROOM_CONFIG``, ``./postroom.toml``, ``/etc/...``)."""

    path: Path | None
    found_by: str

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else DEFAULTS

    def describe(self) -> str:
        """``/srv/p.toml (from POSTROOM_CONFIG)``, or ``built-in defaults``."""
        return f"{self.path} (from {self.found_by})" if self.path is not None else DEFAULTS


def find_config(
    given: Path | None,
    environ: Mapping[str, str],
    cwd: Path,
    *,
    system: Path = SYSTEM_CONFIG,
) -> ConfigSource:
    """The configuration a command started in ``cwd`` with ``environ`` uses; ``given``:
    the file named on its command line."""
    if given is not None:
        return ConfigSource(cwd / given, "--config")
    if named := environ.get(ENV_VAR):
        return ConfigSource(cwd / named, ENV_VAR)
    if (cwd / LOCAL_CONFIG).exists():
        return ConfigSource(cwd / LOCAL_CONFIG, f"./{LOCAL_CONFIG}")
    if system.exists():
        return ConfigSource(system, str(system))
    return ConfigSource(None, DEFAULTS)
