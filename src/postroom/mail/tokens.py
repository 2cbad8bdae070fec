"""Signed tokens: what postroom puts in the links and return paths it writes, so what
comes back to it (a bounce, a pixel fetch, a click, an unsubscribe) names a message that
postroom sent and cannot be forged or guessed.

Every token is HMAC-SHA256 under one secret key (``TokenKey``, ``<data_dir>/token.key``)
over a purpose and its fields, so a token made for one purpose never passes for another.

- URL tokens (``/t/o/...``, ``/t/c/...``, ``/t/u/...``): the fields in base64url, a dot,
  then 128 bits of MAC.
- VERP return paths (``bounces+<token>@domain``): the queue id and 65 bits of MAC in
  lower-case base32, because a local part may be folded to lower case on its way back
  (RFC 5321 2.4 lets a server do that to its own local parts; some do to all).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from postroom.ids import ALPHABET, is_queue_id

__all__ = ["TokenKey", "TokenSigner"]

_URL_MAC = 16  # bytes of MAC in a URL token: 128 bits
_VERP_MAC = 13  # base32 characters in a return path: 65 bits
_SEPARATOR = "\x1f"  # unit separator: never in an address, a queue id or a URL


class TokenKey:
    """The 256-bit key in ``<data_dir>/token.key``, made (0600) on first use. Every
    process of one data directory reads the same file, so a token made by one node is
    read by any."""

    FILE = "token.key"

    @staticmethod
    def load(data_dir: Path) -> bytes:
        path = data_dir / TokenKey.FILE
        try:
            return bytes.fromhex(path.read_text().strip())
        except FileNotFoundError:
            pass
        data_dir.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(f".{TokenKey.FILE}.{os.getpid()}")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(fresh, path)  # the first writer wins; a racing one reads its key
        except FileExistsError:
            pass
        finally:
            fresh.unlink()
        return bytes.fromhex(path.read_text().strip())


class TokenSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("a token key needs at least 128 bits")
        self._key = key

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose.encode() + b"\0" + payload, hashlib.sha256).digest()

    def sign(self, purpose: str, *fields: str) -> str:
        payload = _SEPARATOR.join(fields).encode()
        mac = self._mac(purpose, payload)[:_URL_MAC]
        return f"{_b64(payload)}.{_b64(mac)}"

    def read(self, purpose: str, token: str) -> tuple[str, ...] | None:
        """The fields ``sign`` was given, or None for a token that is not ours."""
        encoded, _, mac = token.partition(".")
        try:
            payload = _unb64(encoded)
            given = _unb64(mac)
            fields = payload.decode()
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return None
        if not hmac.compare_digest(given, self._mac(purpose, payload)[:_URL_MAC]):
            return None
        return tuple(fields.split(_SEPARATOR))

    def verp(self, queue_id: str) -> str:
        """The token of a VERP return path for the message ``queue_id``."""
        return (queue_id + self._verp_mac(queue_id)).lower()

    def read_verp(self, token: str) -> str | None:
        """The queue id a return path's token names, or None when it is not ours."""
        token = token.upper()
        queue_id, mac = token[:16], token[16:]
        if not is_queue_id(queue_id) or not hmac.compare_digest(mac, self._verp_mac(queue_id)):
            return None
        return queue_id

    def _verp_mac(self, queue_id: str) -> str:
        digest = int.from_bytes(self._mac("verp", queue_id.encode())[:9], "big")
        chars = []
        for _ in range(_VERP_MAC):
            digest, digit = divmod(digest, 32)
            chars.append(ALPHABET[digit])
        return "".join(chars)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
