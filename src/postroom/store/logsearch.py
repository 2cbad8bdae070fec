"""The email log's query, the same on every engine: each engine gives its dialect (the
parameter mark, its case-blind tests, the index expressions of schema.sql) and its
function that selects messages; this module decides how to read.

The log is walked from the newest message (the primary key, backwards), keeping those
that match, until a page is full: quick when matches are common. A recipient search may
match one message in a million, so it reads only the newest ``SCAN_FIRST`` messages that
way, then finds the rest through the recipient indexes (quick when matches are rare).
A time range bounds the walk by queue id, since ids begin with the time they were made.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from postroom.ids import queue_id_floor
from postroom.store.models import LogQuery, StoredMessage
from postroom.store.rows import HELD

__all__ = ["SCAN_FIRST", "LogDialect", "nth_newest", "search"]

# Messages a recipient search reads newest first before it turns to the indexes (a few
# milliseconds): a term in 1 message of 40 fills a page here, and one rarer than that
# has few enough matches for the indexes to list them quickly (10,000 in a million:
# tens of milliseconds).
SCAN_FIRST = 2_000
# A queue id is made when the sender is given (MAIL FROM), before the message is received:
# a message received at or after ``since`` got its id at most this long before.
_ID_LEAD = 86400.0
_LAST = "\U0010ffff"  # after every character: "x <= s < x + _LAST" is "s starts with x"

Select = Callable[[str, Sequence[Any], int], list[StoredMessage]]


@dataclass(frozen=True, slots=True)
class LogDialect:
    mark: str  # the parameter mark
    true: str
    held: str  # the test of a held message (alias m)
    # contains(column): case-blind substring test against a lower-cased parameter
    contains: Callable[[str], str]
    # lower(column): the case-blind form a recipient search compares (any letter)
    lower: Callable[[str], str]
    # The recipients_address and recipients_domain index expressions (alias r), which
    # fold ASCII letters only.
    address_key: str
    domain_key: str
    # domain(column): the domain part of an address column
    domain: Callable[[str], str]


def search(q: LogQuery, dialect: LogDialect, select: Select, conn: Any) -> list[StoredMessage]:
    """The messages ``q`` asks for, newest first; ``select(where, params, limit)`` reads
    messages (alias m) newest first."""
    where, params = conditions(q, dialect, indexed=False)
    if q.to is None or q.limit <= 0:
        return select(where, params, q.limit)
    bound = nth_newest(conn, dialect, q.cursor, SCAN_FIRST)
    if bound is None:  # no more than SCAN_FIRST messages to read
        return select(where, params, q.limit)
    found = select(f"{where} AND m.id >= {dialect.mark}", [*params, bound], q.limit)
    if len(found) >= q.limit:
        return found
    # A term that begins beyond ASCII has no index to read: the rest is read one by one.
    where, params = conditions(q, dialect, indexed=_ascii_head(_term(q.to)[0]) != "")
    rest = select(f"{where} AND m.id < {dialect.mark}", [*params, bound], q.limit - len(found))
    return found + rest


def nth_newest(conn: Any, dialect: LogDialect, cursor: str | None, count: int) -> str | None:
    """The id of the ``count``-th message older than ``cursor`` (from the newest when
    None): the oldest a walk of ``count`` messages reads; None when fewer are there."""
    below = f"WHERE id < {dialect.mark}" if cursor is not None else ""
    row = conn.execute(
        f"SELECT id FROM messages {below} ORDER BY id DESC LIMIT 1 OFFSET {dialect.mark}",
        (*(() if cursor is None else (cursor,)), count - 1),
    ).fetchone()
    return row[0] if row is not None else None


def conditions(q: LogQuery, dialect: LogDialect, *, indexed: bool) -> tuple[str, list[Any]]:
    """The WHERE clause and its parameters; ``indexed``: a recipient search reads the
    recipient indexes (for an ASCII term) rather than testing each message."""
    mark, contains = dialect.mark, dialect.contains
    # The page's bounds again on the message id of each table a subquery reads: a planner
    # that joins that table then walks only the window, not the whole table.
    bounds = [(v, t) for v, t in ((q.cursor, "< {}"), (q.floor, ">= {}")) if v is not None]

    def exists(table: str, column: str, test: str) -> tuple[str, list[Any]]:
        within = "".join(f" AND {column} {t.format(mark)}" for _, t in bounds)
        return (
            f"EXISTS (SELECT 1 FROM {table} WHERE {column} = m.id{within} AND {test})",
            [v for v, _ in bounds],
        )

    status = None if q.status == HELD else q.status
    # tags are a JSON array of strings: a tag is found as a JSON string, quotes included
    tag = json.dumps(q.tag).lower() if q.tag else None
    wanted: list[tuple[object, str | tuple[str, list[Any]]]] = [
        (q.cursor, f"m.id < {mark}"),
        (q.since, f"m.received_at >= {mark}"),
        (None if q.since is None else queue_id_floor(q.since - _ID_LEAD), f"m.id >= {mark}"),
        (q.until, f"m.received_at < {mark}"),
        (None if q.until is None else queue_id_floor(q.until + 1), f"m.id < {mark}"),
        (status, exists("recipients r", "r.message_id", f"r.status = {mark}")),
        (q.sender.lower() if q.sender else None, contains("m.sender")),
        (q.source_kind, f"m.source_kind = {mark}"),
        (q.principal, f"m.principal = {mark}"),
        (q.mailer or None, exists("attempts a", "a.message_id", f"a.mailer = {mark}")),
        (
            q.subject.lower() if q.subject else None,
            exists("message_meta t", "t.id", contains("t.subject")),
        ),
        (tag, exists("message_meta t", "t.id", contains("t.tags"))),
        (q.floor, f"m.id >= {mark}"),
    ]
    where = [dialect.held] if q.status == HELD else []
    params: list[Any] = []
    for value, condition in wanted:
        if value is None:
            continue
        test, before = (condition, []) if isinstance(condition, str) else condition
        where.append(test)
        params.extend([*before, value])
    if q.to is not None:
        test, values = _recipient(q.to, dialect, indexed=indexed)
        where.append(test)
        params.extend(values)
    return " AND ".join(where) or dialect.true, params


def _recipient(term: str, dialect: LogDialect, *, indexed: bool) -> tuple[str, list[str]]:
    """A recipient whose address, or whose domain, starts with ``term`` (only its domain
    when ``term`` begins with "@"), without regard to case. ``indexed``: read the indexes
    for the term's ASCII beginning (they fold ASCII only), then test the rest of it."""
    mark = dialect.mark
    text, domain_only = _term(term)
    head = _ascii_head(text)

    def starts(column: str, key: str) -> tuple[str, list[str]]:
        # An ASCII term needs no more than the ASCII fold (the index's, built in): the
        # same test message by message, and quicker than the fold of every letter.
        lookup = f"{key} >= {mark} AND {key} < {mark}"
        if head == text:
            return lookup, [text, text + _LAST]
        test = f"{dialect.lower(column)} >= {mark} AND {dialect.lower(column)} < {mark}"
        if not indexed:
            return test, [text, text + _LAST]
        return f"{lookup} AND {test}", [head, head + _LAST, text, text + _LAST]

    by_domain, domain_values = starts(dialect.domain("r.address"), dialect.domain_key)
    by_address, address_values = starts("r.address", dialect.address_key)
    if indexed:
        pick = "SELECT r.message_id FROM recipients r WHERE {}"
        if domain_only:
            return f"m.id IN ({pick.format(by_domain)})", domain_values
        union = f"{pick.format(by_address)} UNION {pick.format(by_domain)}"
        return f"m.id IN ({union})", address_values + domain_values
    row = "EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND ({}))"
    if domain_only:
        return row.format(by_domain), domain_values
    return row.format(f"({by_address}) OR ({by_domain})"), address_values + domain_values


def _term(term: str) -> tuple[str, bool]:
    """(the term as compared, whether it names a domain only)."""
    text = term.strip().lower()
    return text.removeprefix("@"), text.startswith("@")


def _ascii_head(text: str) -> str:
    """The beginning of ``text`` before its first character beyond ASCII."""
    end = next((i for i, char in enumerate(text) if not char.isascii()), len(text))
    return text[:end]
