"""Configuration: TOML -> frozen Settings; ConfigError(key, problem) for anything wrong.

``load(path)`` is the only way a TOML file becomes ``Settings``. Every problem, from a
TOML syntax error to a port out of range, becomes one ``ConfigError`` whose key is
the dotted path of the setting (``listeners[1].port``, ``limits.auth.window``) or the
file name for problems of the file as a whole. Relative paths in the result are made
absolute against the current directory, so later ``chdir`` calls change nothing.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from postroom.config.problems import toml_error, validation_error
from postroom.config.settings import Settings
from postroom.errors import AddressError, ConfigError
from postroom.mail.address import parse_domain

__all__ = ["Settings", "load"]

_SQLITE = "sqlite:///"
_STORAGE_SCHEMES = (_SQLITE, "postgresql://", "postgres://")


def load(path: Path | None) -> Settings:
    """Read and check the settings; ``None`` gives every default."""
    name = str(path) if path is not None else "<defaults>"
    data = _read(path) if path is not None else {}
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors(), data, name) from None
    _check_hostname(settings.hostname, given="hostname" in data)
    _check_storage(settings.storage)
    return _absolute_paths(settings)


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(str(path), "no such file") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise toml_error(exc, str(path)) from None


def _check_hostname(hostname: str, *, given: bool) -> None:
    try:
        parse_domain(hostname)
    except AddressError:
        problem = f"{hostname!r} is not a valid domain name"
        if not given:
            problem += " (it is this machine's name; set hostname in the configuration)"
        raise ConfigError("hostname", problem) from None
    if hostname.startswith("["):
        raise ConfigError("hostname", "must be a domain name, not an address literal")


def _check_storage(storage: str | None) -> None:
    if storage is None:
        return
    if not storage.startswith(_STORAGE_SCHEMES):
        raise ConfigError("storage", "must be sqlite:///path/to/file.db or postgresql://...")
    if storage.startswith(_SQLITE) and (storage == _SQLITE or storage.endswith("/")):
        raise ConfigError("storage", f"{storage!r} names no database file")


def _absolute_paths(settings: Settings) -> Settings:
    def fix(path: Path) -> Path:
        return path.expanduser().absolute()

    tls, log, storage = settings.tls, settings.log, settings.storage
    if storage is not None and storage.startswith(_SQLITE) and len(storage) > len(_SQLITE):
        storage = f"{_SQLITE}{fix(Path(storage.removeprefix(_SQLITE)))}"
    return settings.model_copy(
        update={
            "data_dir": fix(settings.data_dir),
            "storage": storage,
            "tls": tls.model_copy(
                update={
                    "cert": tls.cert and fix(tls.cert),
                    "key": tls.key and fix(tls.key),
                }
            ),
            "log": log.model_copy(update={"file": log.file and fix(log.file)}),
        }
    )
