"""The settings tree: frozen pydantic models. Every default lives here and nowhere else.

``docs/configuration.md`` and ``postroom.example.toml`` describe each key; a test
checks that they name every key defined here.
"""

from __future__ import annotations

import platform
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AuthThrottleSettings",
    "LimitSettings",
    "ListenerRole",
    "ListenerSettings",
    "LogSettings",
    "Settings",
    "TlsSettings",
    "default_listeners",
]

MIB = 1024 * 1024


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ListenerRole(StrEnum):
    MX = "mx"  # port 25 style: mail for our domains; relay only for authenticated users
    SUBMISSION = "submission"  # port 587 style: STARTTLS, AUTH required before MAIL
    SUBMISSIONS = "submissions"  # port 465 style: implicit TLS, AUTH required (RFC 8314)


class ListenerSettings(_Model):
    address: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]
    role: ListenerRole


def default_listeners() -> tuple[ListenerSettings, ...]:
    return (
        ListenerSettings(port=2525, role=ListenerRole.MX),
        ListenerSettings(port=2587, role=ListenerRole.SUBMISSION),
        ListenerSettings(port=2465, role=ListenerRole.SUBMISSIONS),
    )


class TlsSettings(_Model):
    # Empty: a self-signed certificate is made in <data_dir>/tls on first start.
    cert: Path | None = None
    key: Path | None = None
    min_version: Annotated[str, Field(pattern=r"^1\.[23]$")] = "1.2"

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if (self.cert is None) != (self.key is None):
            raise ValueError("set both tls.cert and tls.key, or neither")
        return self


class AuthThrottleSettings(_Model):
    """AUTH failures per client IP: after ``max_failures`` within ``window`` seconds the
    IP gets ``454 4.7.0`` to AUTH until the window has passed."""

    max_failures: Annotated[int, Field(ge=1)] = 5
    window: Annotated[float, Field(gt=0)] = 300.0


class LimitSettings(_Model):
    max_message_size: Annotated[int, Field(ge=1024)] = 25 * MIB
    max_recipients: Annotated[int, Field(ge=1)] = 100
    max_line_length: Annotated[int, Field(ge=512)] = 2048  # command lines, CRLF included
    command_timeout: Annotated[float, Field(gt=0)] = 300.0  # RFC 5321 4.5.3.2: 5 minutes
    data_timeout: Annotated[float, Field(gt=0)] = 600.0  # RFC 5321 4.5.3.2.6: 10 minutes
    max_connections: Annotated[int, Field(ge=1)] = 1000
    max_connections_per_ip: Annotated[int, Field(ge=1)] = 50
    max_errors: Annotated[int, Field(ge=1)] = 10
    shutdown_grace: Annotated[float, Field(ge=0)] = 30.0
    auth: AuthThrottleSettings = AuthThrottleSettings()
    spool_memory: Annotated[int, Field(ge=0)] = 256 * 1024  # body bytes kept in memory


class LogSettings(_Model):
    level: Annotated[str, Field(pattern=r"^(?i:debug|info|warning|error)$")] = "info"
    file: Path | None = None  # None: standard error


class Settings(_Model):
    hostname: str = Field(default_factory=lambda: platform.node() or "localhost")
    data_dir: Path = Path("postroom-data")
    storage: str | None = None  # None: sqlite:///<data_dir>/postroom.db
    listeners: tuple[ListenerSettings, ...] = Field(default_factory=default_listeners)
    tls: TlsSettings = TlsSettings()
    limits: LimitSettings = LimitSettings()
    log: LogSettings = LogSettings()

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.data_dir / 'postroom.db'}"

    @model_validator(mode="after")
    def _distinct_listeners(self) -> Settings:
        seen: set[tuple[str, int]] = set()
        for listener in self.listeners:
            where = (listener.address, listener.port)
            if listener.port and where in seen:
                raise ValueError(f"two listeners on {listener.address}:{listener.port}")
            seen.add(where)
        return self
