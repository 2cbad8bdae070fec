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

__all__ = ["SCAN_FIRST", "LogDialect", "key_prefixes", "nth_newest", "search", "search_forms"]

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
    # fold ASCII letters at least (key_prefixes covers the rest).
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
    where, params = conditions(q, dialect, indexed=True)
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
    # that joins that table then walks only the window, not the whole table. A window
    # with a floor (a bounded search page) is read as one range of that table, tested
    # row by row, rather than probed once per message (3 to 5 times quicker on SQLite);
    # without one, the walk from the newest message stops when its page is full.
    bounds = [(v, t) for v, t in ((q.cursor, "< {}"), (q.floor, ">= {}")) if v is not None]

    def exists(table: str, column: str, test: str) -> tuple[str, list[Any]]:
        # the bounds' parameters come before the test's
        within = " AND ".join([*(f"{column} {t.format(mark)}" for _, t in bounds), test])
        if q.floor is not None:
            return f"m.id IN (SELECT {column} FROM {table} WHERE {within})", [v for v, _ in bounds]
        return (
            f"EXISTS (SELECT 1 FROM {table} WHERE {column} = m.id AND {within})",
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
        (q.dsn_of, f"m.dsn_of = {mark}"),  # the messages_dsn_of index
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
    when ``term`` begins with "@"), without regard to case, in any form of its domain
    (``search_forms``). ``indexed``: read the indexes for each form's key prefixes, then
    test the whole form."""
    mark = dialect.mark
    addresses, domains = search_forms(term)

    def starts(column: str, key: str, text: str) -> tuple[str, list[str]]:
        # An ASCII term needs no more than the ASCII fold (the index's, built in): the
        # same test message by message, and quicker than the fold of every letter.
        lookup = f"{key} >= {mark} AND {key} < {mark}"
        if text.isascii():
            return lookup, [text, text + _LAST]
        test = f"{dialect.lower(column)} >= {mark} AND {dialect.lower(column)} < {mark}"
        return test, [text, text + _LAST]

    def indexed_starts(column: str, key: str, text: str) -> list[tuple[str, list[str]]]:
        if text.isascii():
            return [starts(column, key, text)]
        test, values = starts(column, key, text)
        lookup = f"{key} >= {mark} AND {key} < {mark}"
        return [(f"{lookup} AND {test}", [p, p + _LAST, *values]) for p in key_prefixes(text)]

    columns = [
        *(("r.address", dialect.address_key, text) for text in addresses),
        *((dialect.domain("r.address"), dialect.domain_key, text) for text in domains),
    ]
    if indexed:
        picks = [pick for c in columns for pick in indexed_starts(*c)]
        union = " UNION ".join(f"SELECT r.message_id FROM recipients r WHERE {t}" for t, _ in picks)
        return f"m.id IN ({union})", [v for _, values in picks for v in values]
    tests = [starts(*c) for c in columns]
    either = " OR ".join(f"({t})" for t, _ in tests)
    row = f"EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = m.id AND ({either}))"
    return row, [v for _, values in tests for v in values]


def search_forms(term: str) -> tuple[list[str], list[str]]:
    """(the address prefixes, the domain prefixes) a recipient term stands for, lower
    case: "@dom" only domains, "loc@dom" only addresses, and a term without "@" either.
    A domain is looked for as given, with its non-ASCII labels as A-labels and with its
    A-labels as U-labels, so ``@bücher.example`` finds ``xn--bcher-kva.example`` and the
    other way round (a label is converted only when the term has it whole)."""
    text = term.strip().lower()
    local, at, domain = text.rpartition("@")
    if not at:
        return [text], _domain_forms(text)
    forms = _domain_forms(domain)
    if not local and text.startswith("@"):
        return [], forms
    return [f"{local}@{form}" for form in forms], []


def _domain_forms(domain: str) -> list[str]:
    forms = [domain]
    for convert in (_to_ascii_label, _to_unicode_label):
        labels = [convert(label) for label in domain.split(".")]
        form = ".".join(labels)
        if form not in forms:
            forms.append(form)
    return forms


def _to_ascii_label(label: str) -> str:
    try:
        return label if label.isascii() else label.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return label


def _to_unicode_label(label: str) -> str:
    try:
        return label.encode("ascii").decode("idna").lower() if label.startswith("xn--") else label
    except UnicodeError:
        return label


# Index ranges a non-ASCII term is looked up by: the index keeps letters beyond ASCII as
# stored (SQLite's lower() folds ASCII only), so each such letter may be in any case.
_MAX_PREFIXES = 8


def key_prefixes(text: str) -> list[str]:
    """Prefixes of ``text`` as the recipient indexes may hold them: its ASCII letters
    lower case, each other letter as written, upper or title case. As long a beginning
    of ``text`` as keeps them at most ``_MAX_PREFIXES``: every stored value whose full
    lower case starts with ``text`` has an index key starting with one of them."""
    prefixes = [""]
    for char in text:
        cases = [char] if char.isascii() else _cases(char)
        if len(prefixes) * len(cases) > _MAX_PREFIXES:
            break
        prefixes = [p + c for p in prefixes for c in cases]
    return prefixes


def _cases(char: str) -> list[str]:
    found = [char]
    for other in (char.upper(), char.title()):
        if len(other) == 1 and other not in found and other.lower() == char:
            found.append(other)
    return found
