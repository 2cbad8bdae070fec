"""OAuth tokens at rest: ``<data_dir>/oauth/<mailer>.json``, mode 0600, written atomically.

The file holds the refresh token that ``postroom mailer authorize`` obtained, the
current access token and when it expires, and, after the provider refused the refresh
token (``invalid_grant``), why the mailer has failed. The server and the CLI share the
file: ``postroom mailer status`` reads the failed state from it, and authorizing again
replaces it while the server runs (the mailer reads it again before its next refresh).

Between printing the consent address and exchanging the code, ``<mailer>.pending.json``
(same mode) holds that authorization's ``state`` and PKCE code verifier (RFC 7636), so
that a code pasted into a later ``postroom mailer authorize --code`` is checked and
exchanged as the one the address asked for.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

__all__ = ["PendingAuthorization", "PendingFile", "TokenFile", "TokenState", "token_path"]


@dataclass(frozen=True, slots=True)
class TokenState:
    refresh_token: str
    access_token: str | None = None
    expires_at: float | None = None  # epoch seconds; None: unknown, refresh before use
    scope: str | None = None
    authorized_at: float | None = None
    failed: str | None = None  # why the refresh token no longer works, in plain words
    failed_at: float | None = None

    def with_access(self, token: str, expires_at: float | None, refresh: str | None) -> TokenState:
        """After a refresh; providers that rotate refresh tokens send a new one."""
        return replace(
            self,
            access_token=token,
            expires_at=expires_at,
            refresh_token=refresh or self.refresh_token,
        )


@dataclass(frozen=True, slots=True)
class PendingAuthorization:
    """A consent address handed to the user: the ``state`` its answer must carry, and
    the PKCE code verifier (RFC 7636 4.1: 43 to 128 unreserved characters) whose S256
    challenge it holds."""

    state: str
    code_verifier: str

    @classmethod
    def new(cls) -> PendingAuthorization:
        return cls(state=secrets.token_urlsafe(16), code_verifier=secrets.token_urlsafe(64))


def token_path(data_dir: Path, mailer: str) -> Path:
    return data_dir / "oauth" / f"{mailer}.json"


def _write_private(path: Path, data: bytes) -> None:
    """Write beside the file, fsync, rename: a crash leaves the old or the new file."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask
        file.write(data)
        file.flush()
        os.fsync(fd)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _read_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when missing or not one."""
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


class PendingFile:
    """The authorization in progress for one mailer."""

    def __init__(self, data_dir: Path, mailer: str) -> None:
        self.path = data_dir / "oauth" / f"{mailer}.pending.json"

    def load(self) -> PendingAuthorization | None:
        data = _read_object(self.path)
        state, verifier = (data or {}).get("state"), (data or {}).get("code_verifier")
        if not isinstance(state, str) or not isinstance(verifier, str):
            return None
        return PendingAuthorization(state, verifier)

    def save(self, pending: PendingAuthorization) -> None:
        _write_private(self.path, json.dumps(asdict(pending)).encode())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class TokenFile:
    """Reads and writes one mailer's token file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> TokenState | None:
        """None when the mailer was never authorized (or the file is unreadable JSON)."""
        data = _read_object(self.path)
        if data is None or not isinstance(data.get("refresh_token"), str):
            return None
        fields = TokenState.__dataclass_fields__
        return TokenState(**{k: v for k, v in data.items() if k in fields})

    def save(self, state: TokenState) -> None:
        _write_private(self.path, json.dumps(asdict(state), indent=2).encode())
