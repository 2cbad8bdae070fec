"""Secrets given in the config file or named as an environment variable (``<key>_env``).

One rule for every secret-bearing setting (provider API keys, OAuth client secrets,
webhook signing keys): the variable wins when it is named, and must then be set.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import SecretStr

__all__ = ["MissingSecret", "read_secret"]


class MissingSecret(Exception):
    """Neither the key nor its variable gives the secret. ``key`` is the setting to fix."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def read_secret(
    name: str, given: SecretStr | str | None, variable: str | None, environ: Mapping[str, str]
) -> str:
    """The secret of setting ``name``: from the environment variable ``variable`` when one
    is named, else ``given``."""
    if variable is not None:
        secret = environ.get(variable)
        if not secret:
            raise MissingSecret(f"{name}_env", f"the environment variable {variable} is not set")
        return secret
    if given is None:
        raise MissingSecret(name, f"set {name} or {name}_env")
    return given.get_secret_value() if isinstance(given, SecretStr) else given
