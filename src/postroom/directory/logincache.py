"""Recent successful logins, so a client that logs in on every connection pays for one
argon2id verification per ``ttl``, not one per connection (Dovecot's ``auth_cache``).

An entry is a keyed BLAKE2b digest of the user's *stored hash* and the password, made
with a key drawn at start and never written anywhere: the cache holds no password and
nothing that could be checked offline. Keying on the stored hash is what keeps it safe
without being told about changes: ``user passwd`` writes a new hash (with a new salt), so
the old entry can never match again, and a removed user has no stored hash to look up;
both are refused at once, in every process, whichever process made the change. Only
successes are kept, so a wrong password always takes the full verification. The cache is
bounded (least recently used entries go first) and entries expire after ``ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict

from postroom.clock import Clock

__all__ = ["LoginCache"]


class LoginCache:
    def __init__(self, clock: Clock, *, ttl: float, max_entries: int) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max_entries = max_entries
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, float] = OrderedDict()  # digest -> expiry

    def __len__(self) -> int:
        return len(self._entries)

    def _digest(self, password_hash: str, password: str) -> bytes:
        data = password_hash.encode() + b"\x00" + password.encode("utf-8", "surrogatepass")
        return hashlib.blake2b(data, key=self._key, digest_size=32).digest()

    def verified(self, password_hash: str, password: str) -> bool:
        """True when this password was verified against this stored hash within ttl."""
        if self._max_entries == 0:
            return False
        digest = self._digest(password_hash, password)
        expiry = self._entries.get(digest)
        if expiry is None:
            return False
        if expiry <= self._clock.monotonic():
            del self._entries[digest]
            return False
        self._entries.move_to_end(digest)
        return True

    def remember(self, password_hash: str, password: str) -> None:
        """Record a successful verification of ``password`` against ``password_hash``."""
        if self._max_entries == 0 or self._ttl <= 0:
            return
        digest = self._digest(password_hash, password)
        self._entries[digest] = self._clock.monotonic() + self._ttl
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
