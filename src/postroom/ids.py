"""Queue ids and Message-ID values.

A queue id is 16 characters of Crockford base32: 48 bits of milliseconds since
the epoch, then 32 random bits. Ids sort by time and do not collide across nodes.
"""

from __future__ import annotations

import random
import secrets

__all__ = [
    "ALPHABET",
    "is_queue_id",
    "message_id",
    "new_queue_id",
    "queue_id_floor",
    "queue_id_time",
]

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_LENGTH = 16


def new_queue_id(now: float, rng: random.Random | None = None) -> str:
    """``rng``: a generator seeded from the OS (ids must not collide, not be secret); one
    read of the OS's randomness per id costs a visible share of a small message."""
    bits = rng.getrandbits(32) if rng is not None else secrets.randbits(32)
    return _encode((int(now * 1000) & ((1 << 48) - 1)) << 32 | bits)


def queue_id_floor(at: float) -> str:
    """The smallest queue id made at ``at`` (to the millisecond) or later: ids made
    earlier sort before it, ids made then or later do not."""
    return _encode((min(max(int(at * 1000), 0), (1 << 48) - 1)) << 32)


def queue_id_time(queue_id: str) -> float:
    """When a queue id was made (to the millisecond): its leading 48 bits."""
    value = 0
    for char in queue_id:
        value = value * 32 + ALPHABET.index(char)
    return (value >> 32) / 1000


def _encode(value: int) -> str:
    chars = []
    for _ in range(_LENGTH):
        value, digit = divmod(value, 32)
        chars.append(ALPHABET[digit])
    return "".join(reversed(chars))


def is_queue_id(text: str) -> bool:
    return len(text) == _LENGTH and all(c in ALPHABET for c in text)


def message_id(queue_id: str, hostname: str) -> str:
    """A Message-ID header value (RFC 5322 3.6.4) for a message we create or complete."""
    return f"<{queue_id}.{secrets.token_hex(4)}@{hostname}>"
