"""The shared writer's wire, sans I/O: batches of rows to write one way, outcomes back.

An accept worker hands the primary's writer what it wrote during one turn of its event
loop (the messages it accepted, the outcomes of the local mail it delivered) as one
request; the primary answers it once every write of it is committed (or failed), one
result per write, in order. Each frame is a 4-byte big-endian length, then ``marshal``
data of plain values (tuples, lists, str, bytes, numbers, None):

    request: (batch number, [("message", EnqueueRows as a tuple)
                             or ("outcomes", OutcomeRows as a tuple), ...])
    reply:   (batch number, [None (committed) or (error kind, text), ...])

``marshal`` reads only what our own processes wrote: the socket is the data directory's,
open to the server's user alone, who can write the database file directly anyway.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Sequence
from typing import Any, cast

from postroom.errors import StoreDamaged, StoreError, StoreFull, StoreUnavailable
from postroom.store.sqlite.delivery import OutcomeRows
from postroom.store.sqlite.queue import EnqueueRows

__all__ = [
    "MAX_FRAME",
    "Frames",
    "Rows",
    "WireError",
    "read_reply",
    "read_request",
    "reply",
    "request",
]

_LENGTH = struct.Struct("!I")
MAX_FRAME = 1 << 30  # a batch is bounded by the group commit's bytes, far below
_ERRORS: dict[str, type[StoreError]] = {
    "full": StoreFull,
    "damaged": StoreDamaged,
    "unavailable": StoreUnavailable,  # also any other StoreError
}
_KINDS = {error: kind for kind, error in _ERRORS.items()}

Outcome = StoreError | None
Rows = EnqueueRows | OutcomeRows  # one write: a new message, or a message's outcomes
_KIND_NAMES: dict[type[Rows], str] = {EnqueueRows: "message", OutcomeRows: "outcomes"}
_KIND_TYPES = {name: kind for kind, name in _KIND_NAMES.items()}


class WireError(Exception):
    """The other side sent something that is not a frame of this protocol."""


class Frames:
    """Cuts a byte stream into the values of its frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[object]:
        """The values of the frames completed by ``data``."""
        buffer = self._buffer
        buffer += data
        values: list[object] = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > MAX_FRAME:
                raise WireError(f"a frame of {length} bytes")
            end = start + _LENGTH.size + length
            if len(buffer) < end:
                break
            try:
                values.append(marshal.loads(memoryview(buffer)[start + _LENGTH.size : end]))
            except (EOFError, ValueError, TypeError) as exc:
                raise WireError(f"an unreadable frame: {exc}") from None
            start = end
        del buffer[:start]
        return values


def _frame(value: tuple[int, list[Any]]) -> bytes:
    data = marshal.dumps(value)
    return _LENGTH.pack(len(data)) + data


def request(batch: int, writes: Sequence[Rows]) -> bytes:
    """The frame asking for ``writes`` to be committed; ValueError if a value in them
    is not a plain one."""
    return _frame((batch, [(_KIND_NAMES[type(rows)], tuple(rows)) for rows in writes]))


def read_request(value: object) -> tuple[int, list[Rows]]:
    """A request frame's batch number and writes."""
    try:
        batch, writes = cast(tuple[object, list[tuple[str, tuple[Any, ...]]]], value)
        found = [_KIND_TYPES[kind](*fields) for kind, fields in writes]
    except (TypeError, ValueError, KeyError):
        raise WireError("not a request") from None
    if not isinstance(batch, int) or not all(map(_well_formed, found)):
        raise WireError("not a request")
    return batch, found


def _well_formed(rows: Rows) -> bool:
    if isinstance(rows, EnqueueRows):
        return isinstance(rows.data, bytes)
    return isinstance(rows.message_id, str)


def reply(batch: int, outcomes: Sequence[Outcome]) -> bytes:
    """The frame answering request ``batch``: None for each message committed."""
    return _frame(
        (
            batch,
            [
                None if error is None else (_KINDS.get(type(error), "unavailable"), str(error))
                for error in outcomes
            ],
        )
    )


def read_reply(value: object) -> tuple[int, list[Outcome]]:
    """A reply frame's batch number and outcomes, as the ``StoreError`` each failed with."""
    try:
        batch, outcomes = cast(tuple[object, list[tuple[str, str] | None]], value)
        found: list[Outcome] = [
            None if outcome is None else _ERRORS[outcome[0]](str(outcome[1]))
            for outcome in outcomes
        ]
    except (TypeError, ValueError, KeyError, IndexError):
        raise WireError("not a reply") from None
    if not isinstance(batch, int):
        raise WireError("not a reply")
    return batch, found
