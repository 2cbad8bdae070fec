"""OAuth tokens at rest: ``<data_dir>/oauth/<mailer>.json``, mode 0600, written atomically.

The file holds the refresh token that ``postroom mailer authorize`` obtained, the
current access token and when it expires, and, after the provider refused the refresh
token (``invalid_grant``), why the mailer has failed. The server and the CLI share the
file: ``postroom mailer status`` reads the failed state from it, and authorizing again
replaces it while the server runs (the mailer reads it again before its next refresh).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

__all__ = ["TokenFile", "TokenState", "token_path"]


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


def token_path(data_dir: Path, mailer: str) -> Path:
    return data_dir / "oauth" / f"{mailer}.json"


class TokenFile:
    """Reads and writes one mailer's token file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> TokenState | None:
        """None when the mailer was never authorized (or the file is unreadable JSON)."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("refresh_token"), str):
            return None
        fields = TokenState.__dataclass_fields__
        return TokenState(**{k: v for k, v in data.items() if k in fields})

    def save(self, state: TokenState) -> None:
        """Write beside the file, fsync, rename: a crash leaves the old or the new file."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = json.dumps(asdict(state), indent=2).encode()
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask
            file.write(data)
            file.flush()
            os.fsync(fd)
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
