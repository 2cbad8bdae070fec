"""The effective configuration as TOML: every key with the value in force, defaults
included, secrets masked.

What it prints is a configuration file in its own right: loaded again it gives the same
settings (secrets aside), so ``postroom config show > postroom.toml`` is a full starting
point. Keys that are unset (``tls.cert`` without a certificate) are left out, as TOML
has no null; the storage URL is shown as it is used (``sqlite:///<data_dir>/...``).
"""

from __future__ import annotations

from typing import Any

import tomli_w

from postroom.config.settings import Settings

__all__ = ["MASK", "effective_toml"]

MASK = "**********"  # what pydantic shows for a SecretStr, used for every secret
# Secrets held as plain strings; every SecretStr setting is masked by its type.
_PLAIN_SECRETS = frozenset({"password"})


def effective_toml(settings: Settings) -> str:
    data = settings.model_dump(mode="json")
    data["storage"] = settings.storage_url
    return tomli_w.dumps(_shown(data))


def _shown(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _shown(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_shown(item) for item in value]
    if key in _PLAIN_SECRETS and isinstance(value, str):
        return MASK
    return value
