"""Route conditions, compiled once from the settings into small predicate objects.

``compile_group(settings)`` turns a ``ConditionGroup`` into a ``Group`` whose
``matches(view)`` answers for one recipient of one message; ``trace(view)`` answers
the same with every condition's verdict, for ``postroom route explain``.

A ``MessageView`` is what the predicates look at: the envelope facts, and the message
text parsed only as far as a condition needs it. The header block is parsed once, on
the first header condition; the body's text parts are decoded once, on the first body
condition, from at most ``BODY_SCAN_BYTES`` of the message and up to
``BODY_TEXT_CHARS`` characters. Views of the same message for other recipients
(``view.for_recipient()``) share that work. Within a group, cheap conditions (the
envelope) are tested before headers, and headers before the body, so a route that
fails on the envelope never parses anything.
"""

from __future__ import annotations

import dataclasses
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser, BytesParser
from types import MappingProxyType
from typing import Final

from postroom.config.routes import (
    ADDRESS_FIELDS,
    ConditionField,
    ConditionGroup,
    ConditionSettings,
    Match,
    Operator,
)
from postroom.delivery.message import OutboundMessage
from postroom.errors import AddressError
from postroom.mail.address import to_ascii_domain

__all__ = [
    "ALWAYS",
    "BODY_SCAN_BYTES",
    "BODY_TEXT_CHARS",
    "Condition",
    "ConditionResult",
    "Group",
    "GroupResult",
    "MessageView",
    "compile_group",
    "conditions_held",
]

BODY_SCAN_BYTES: Final = 1024 * 1024  # of the stored message, for body conditions
BODY_TEXT_CHARS: Final = 256 * 1024  # of decoded body text
HEADER_BLOCK_BYTES: Final = 256 * 1024  # a header block longer than this is cut here
_SEEN_CHARS: Final = 120  # of a value shown by trace()

_FOLDED_LINE = re.compile(r"\r?\n(?=[ \t])")


# -- the view ------------------------------------------------------------------------


class _Parsed:
    """The parts of one message's text, parsed on first use and kept."""

    __slots__ = ("_body", "_data", "_folded", "_header_values", "_headers")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._headers: Message | None = None
        self._header_values: dict[str, tuple[str, ...]] = {}
        self._body: str | None = None
        self._folded: dict[object, tuple[str, ...]] = {}

    def header(self, name: str) -> tuple[str, ...]:
        key = name.lower()
        if key not in self._header_values:
            self._header_values[key] = tuple(
                _decoded(field, raw)
                for field, raw in self._header_block().raw_items()
                if field.lower() == key
            )
        return self._header_values[key]

    def body(self) -> str:
        if self._body is None:
            self._body = _body_text(self._data[:BODY_SCAN_BYTES])
        return self._body

    def folded(self, key: object, values: tuple[str, ...]) -> tuple[str, ...]:
        """``values`` case-folded, kept under ``key``: the body is folded once, not once
        per condition and recipient."""
        if key not in self._folded:
            self._folded[key] = tuple(value.casefold() for value in values)
        return self._folded[key]

    def _header_block(self) -> Message:
        if self._headers is None:
            self._headers = BytesHeaderParser(policy=policy.default).parsebytes(
                _header_bytes(self._data)
            )
        return self._headers


def _header_bytes(data: bytes) -> bytes:
    end = min(
        (i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0), default=len(data)
    )
    return data[: min(end, HEADER_BLOCK_BYTES)]


def _decoded(name: str, raw: str) -> str:
    """A header value as text: unfolded, RFC 2047 encoded words decoded."""
    try:
        return str(policy.default.header_fetch_parse(name, raw))
    except Exception:  # a malformed header is matched as written
        return _FOLDED_LINE.sub("", raw).strip()


def _body_text(data: bytes) -> str:
    message = BytesParser(policy=policy.default).parsebytes(data)
    texts: list[str] = []
    size = 0
    for part in message.walk():
        if size >= BODY_TEXT_CHARS:
            break
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if isinstance(part, EmailMessage) and part.is_attachment():
            continue
        text = _part_text(part)
        texts.append(text)
        size += len(text)
    return "\n".join(texts)[:BODY_TEXT_CHARS]


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "us-ascii"
    try:
        return payload.decode(charset, "replace")
    except LookupError:  # an unknown charset: the ASCII in it is still worth matching
        return payload.decode("utf-8", "replace")


def _domain(address: str) -> str:
    domain = address.rpartition("@")[2] if "@" in address else ""
    try:
        return to_ascii_domain(domain)
    except AddressError:
        return domain.lower()


class MessageView:
    """One recipient of one message, as route conditions see it."""

    __slots__ = ("_parsed", "message", "recipient")

    def __init__(
        self, message: OutboundMessage, recipient: str, *, _parsed: _Parsed | None = None
    ) -> None:
        self.message = message
        self.recipient = recipient
        self._parsed = _parsed if _parsed is not None else _Parsed(message.data)

    def for_recipient(self, recipient: str) -> MessageView:
        """The same message for another recipient, sharing what was parsed."""
        return MessageView(self.message, recipient, _parsed=self._parsed)

    def header(self, name: str) -> tuple[str, ...]:
        """Every value of the header ``name`` (any case), decoded; parsed on first use."""
        return self._parsed.header(name)

    def body(self) -> str:
        """The decoded text parts of the body (capped); extracted on first use."""
        return self._parsed.body()

    def values(
        self, field: ConditionField, header: str | None = None, *, fold: bool = False
    ) -> tuple[str, ...]:
        """The values a condition on ``field`` tests, case-folded when ``fold``."""
        values = _FIELDS[field](self, header)
        if not fold:
            return values
        if field in ADDRESS_FIELDS:  # short: folding is cheaper than keeping
            return tuple(value.casefold() for value in values)
        return self._parsed.folded((field, header), values)


_Extract = Callable[["MessageView", str | None], tuple[str, ...]]

# What each field looks at: every value a condition is tested against.
_FIELDS: Final[Mapping[ConditionField, _Extract]] = MappingProxyType(
    {
        ConditionField.RECIPIENT: lambda v, _: (v.recipient,),
        ConditionField.RECIPIENT_DOMAIN: lambda v, _: (_domain(v.recipient),),
        ConditionField.SENDER: lambda v, _: (v.message.sender,),
        ConditionField.SENDER_DOMAIN: lambda v, _: (_domain(v.message.sender),),
        ConditionField.SOURCE: lambda v, _: (v.message.principal,) if v.message.principal else (),
        ConditionField.SUBJECT: lambda v, _: v.header("Subject"),
        ConditionField.HEADER: lambda v, name: v.header(name or ""),
        ConditionField.BODY: lambda v, _: (v.body(),),
    }
)

# Cost order within a group: envelope facts, then the header block, then the body.
_COST: Final[Mapping[ConditionField, int]] = MappingProxyType(
    {
        **dict.fromkeys(ADDRESS_FIELDS, 0),
        ConditionField.SUBJECT: 1,
        ConditionField.HEADER: 1,
        ConditionField.BODY: 2,
    }
)


# -- conditions ----------------------------------------------------------------------

# Each operator as (value seen, configured value) -> bool; regex is compiled instead.
_OPERATORS: Final[Mapping[Operator, Callable[[str, str], bool]]] = MappingProxyType(
    {
        Operator.EQUALS: operator.eq,
        Operator.CONTAINS: operator.contains,
        Operator.STARTS_WITH: str.startswith,
        Operator.ENDS_WITH: str.endswith,
    }
)

_DOMAIN_FIELDS: Final = frozenset({ConditionField.RECIPIENT_DOMAIN, ConditionField.SENDER_DOMAIN})


@dataclass(frozen=True, slots=True)
class _Compare:
    test: Callable[[str, str], bool]
    value: str

    def __call__(self, seen: str) -> bool:
        return self.test(seen, self.value)


@dataclass(frozen=True, slots=True)
class _Search:
    pattern: re.Pattern[str]

    def __call__(self, seen: str) -> bool:
        return self.pattern.search(seen) is not None


@dataclass(frozen=True, slots=True)
class ConditionResult:
    condition: Condition
    matched: bool
    seen: tuple[str, ...]  # the values tested (shortened)


@dataclass(frozen=True, slots=True)
class Condition:
    """One compiled condition: a field's values, an operator's test, maybe negated."""

    field: ConditionField
    header: str | None
    test: Callable[[str], bool]
    fold: bool  # test case-folded values
    negate: bool
    text: str  # for people: "recipient_domain equals 'example.org'"

    @classmethod
    def compile(cls, settings: ConditionSettings) -> Condition:
        test: Callable[[str], bool]
        if settings.operator is Operator.REGEX:  # compiled with re.IGNORECASE when needed
            fold = False
            test = _Search(settings.regex())
        else:
            fold = settings.ignore_case
            value = settings.value
            if settings.field in _DOMAIN_FIELDS:
                value = _configured_domain(value)
            test = _Compare(_OPERATORS[settings.operator], value.casefold() if fold else value)
        text = _describe(settings)
        return cls(settings.field, settings.header, test, fold, settings.negate, text)

    def matches(self, view: MessageView) -> bool:
        hit = any(map(self.test, view.values(self.field, self.header, fold=self.fold)))
        return hit != self.negate

    def trace(self, view: MessageView) -> ConditionResult:
        seen = view.values(self.field, self.header)
        return ConditionResult(self, self.matches(view), tuple(_shorten(s) for s in seen))

    @property
    def cost(self) -> int:
        return _COST[self.field]


def _configured_domain(value: str) -> str:
    """Domains are compared as A-labels: ``bücher.example`` is ``xn--bcher-kva.example``
    (label by label, so ``.bücher.example`` works with ``ends_with``)."""
    try:
        return ".".join(to_ascii_domain(label) if label else label for label in value.split("."))
    except AddressError:
        return value


_VERBS: Final[Mapping[Operator, str]] = MappingProxyType(
    {
        Operator.EQUALS: "equals",
        Operator.CONTAINS: "contains",
        Operator.STARTS_WITH: "starts with",
        Operator.ENDS_WITH: "ends with",
        Operator.REGEX: "matches",
    }
)


def _describe(settings: ConditionSettings) -> str:
    subject = f"header {settings.header}" if settings.header else settings.field.value
    text = f"{subject} {_VERBS[settings.operator]} {settings.value!r}"
    if settings.case_sensitive is not None:
        text += " (case-sensitive)" if settings.case_sensitive else " (ignoring case)"
    return f"not {text}" if settings.negate else text


def _shorten(value: str) -> str:
    return value if len(value) <= _SEEN_CHARS else value[: _SEEN_CHARS - 1] + "…"


# -- groups --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupResult:
    match: Match
    matched: bool
    conditions: tuple[ConditionResult, ...]
    all_of: tuple[GroupResult, ...]
    any_of: tuple[GroupResult, ...]


_COMBINE: Final[Mapping[Match, Callable[[Iterable[object]], bool]]] = MappingProxyType(
    {Match.ALL: all, Match.ANY: any}
)


@dataclass(frozen=True, slots=True)
class Group:
    """A compiled condition group (see ``postroom.config.routes`` for the rule)."""

    match: Match = Match.ALL
    conditions: tuple[Condition, ...] = ()  # as written (for explanations)
    all_of: tuple[Group, ...] = ()
    any_of: tuple[Group, ...] = ()
    _cheap_first: tuple[Condition, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cheap_first = tuple(sorted(self.conditions, key=lambda c: c.cost))
        object.__setattr__(self, "_cheap_first", cheap_first)

    def matches(self, view: MessageView) -> bool:
        return (
            self._conditions_hold(c.matches(view) for c in self._cheap_first)
            and all(group.matches(view) for group in self.all_of)
            and (not self.any_of or any(group.matches(view) for group in self.any_of))
        )

    def trace(self, view: MessageView) -> GroupResult:
        conditions = tuple(c.trace(view) for c in self.conditions)
        all_of = tuple(g.trace(view) for g in self.all_of)
        any_of = tuple(g.trace(view) for g in self.any_of)
        matched = (
            self._conditions_hold(r.matched for r in conditions)
            and all(r.matched for r in all_of)
            and (not any_of or any(r.matched for r in any_of))
        )
        return GroupResult(self.match, matched, conditions, all_of, any_of)

    def _conditions_hold(self, verdicts: Iterable[bool]) -> bool:
        return not self.conditions or _COMBINE[self.match](verdicts)


ALWAYS: Final = Group()  # no conditions: matches every message


def conditions_held(result: GroupResult) -> str:
    """The conditions that made a matching group match, for people: every condition of
    an ``all`` group, the ones that held of an ``any`` group, and so on in nested groups
    (only the ``any_of`` groups that matched); "" for a group without conditions."""
    parts = [r.condition.text for r in result.conditions if r.matched or result.match is Match.ALL]
    parts.extend(held for g in result.all_of if (held := conditions_held(g)))
    parts.extend(held for g in result.any_of if g.matched and (held := conditions_held(g)))
    return " and ".join(parts)


def compile_group(settings: ConditionGroup) -> Group:
    """A group from its settings; nested groups are compiled too."""
    return Group(
        match=settings.match,
        conditions=tuple(Condition.compile(c) for c in settings.conditions),
        all_of=tuple(compile_group(g) for g in settings.all_of),
        any_of=tuple(compile_group(g) for g in settings.any_of),
    )
