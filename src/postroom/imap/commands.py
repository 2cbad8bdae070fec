"""IMAP commands as typed values, from the tokens of one command (RFC 3501 6, 9 and the
extensions postroom offers). ``parse`` raises ``CommandError`` (a BAD reply) and nothing
else."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from postroom.imap.tokens import Atom, ParenList, String, Token
from postroom.mail.mutf7 import decode_mutf7

__all__ = [
    "CommandError",
    "FetchAtt",
    "Section",
    "SequenceSet",
    "parse",
    "parse_sequence_set",
]

SYSTEM_FLAGS: Final = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
_SYSTEM_BY_UPPER: Final = {flag.upper(): flag for flag in (*SYSTEM_FLAGS, "\\Recent")}
_MONTHS: Final = (
    "JAN",
    "FEB",
    "MAR",
    "APR",
    "MAY",
    "JUN",
    "JUL",
    "AUG",
    "SEP",
    "OCT",
    "NOV",
    "DEC",
)
_DATE: Final = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")
_DATE_TIME: Final = re.compile(
    r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\Z"
)
_SEQ_NUMBER: Final = re.compile(r"[1-9]\d{0,9}\Z")
_PARTIAL: Final = re.compile(r"<(\d{1,10})(?:\.(\d{1,10}))?>\Z")
_MAX_NUMBER: Final = 2**32 - 1
_MAX_SEARCH_DEPTH: Final = 32


class CommandError(ValueError):
    """A command that cannot be parsed; the text goes into its BAD reply."""


# -- values --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """``1:3,7,9:*``; None stands for ``*`` (the largest number in use)."""

    ranges: tuple[tuple[int | None, int | None], ...]

    def bounds(self, largest: int) -> Iterator[tuple[int, int]]:
        for start, end in self.ranges:
            low = largest if start is None else start
            high = largest if end is None else end
            yield (low, high) if low <= high else (high, low)

    def contains(self, number: int, largest: int) -> bool:
        return any(low <= number <= high for low, high in self.bounds(largest))

    def select(self, numbers: Sequence[int]) -> list[int]:
        """Which of ``numbers`` (ascending) the set names; ``*`` is the last of them."""
        largest = numbers[-1] if numbers else 0
        bounds = list(self.bounds(largest))
        return [n for n in numbers if any(low <= n <= high for low, high in bounds)]


@dataclass(frozen=True, slots=True)
class Section:
    """``BODY[1.2.HEADER.FIELDS (From)]``: a part path and what of it."""

    part: tuple[int, ...] = ()
    text: str = ""  # "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def __str__(self) -> str:
        path = ".".join(map(str, self.part))
        spec = ".".join(x for x in (path, self.text) if x)
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return spec


@dataclass(frozen=True, slots=True)
class FetchAtt:
    name: str  # ENVELOPE, FLAGS, INTERNALDATE, RFC822*, BODY, BODYSTRUCTURE, UID, MODSEQ, BODY[]
    section: Section | None = None  # for BODY[...] (name "BODY[]")
    partial: tuple[int, int | None] | None = None
    peek: bool = False


# -- commands ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Simple:
    """A command without arguments: CAPABILITY NOOP LOGOUT STARTTLS NAMESPACE IDLE CHECK
    CLOSE UNSELECT EXPUNGE."""

    name: str


@dataclass(frozen=True, slots=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    mechanism: str
    initial: bytes | None  # SASL-IR (RFC 4959); None: ask with "+"


@dataclass(frozen=True, slots=True)
class Select:
    mailbox: str
    read_only: bool
    condstore: bool = False


@dataclass(frozen=True, slots=True)
class MailboxCommand:
    """CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, GETQUOTAROOT: one mailbox name."""

    name: str
    mailbox: str
    special_use: tuple[str, ...] = ()  # CREATE ... (USE (\Archive)) (RFC 6154)


@dataclass(frozen=True, slots=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class ListCommand:
    reference: str
    patterns: tuple[str, ...]
    lsub: bool = False
    select_options: tuple[str, ...] = ()  # SUBSCRIBED, SPECIAL-USE, RECURSIVEMATCH
    return_options: tuple[str, ...] = ()  # SUBSCRIBED, CHILDREN, SPECIAL-USE
    return_status: tuple[str, ...] = ()  # LIST-STATUS (RFC 5819)


@dataclass(frozen=True, slots=True)
class Status:
    mailbox: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Append:
    mailbox: str
    flags: tuple[str, ...]
    date: dt.datetime | None
    message: bytes


@dataclass(frozen=True, slots=True)
class Enable:
    capabilities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Id:
    fields: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class GetQuota:
    root: str


@dataclass(frozen=True, slots=True)
class Expunge:
    uids: SequenceSet | None  # UID EXPUNGE (RFC 4315)


@dataclass(frozen=True, slots=True)
class Fetch:
    messages: SequenceSet
    items: tuple[FetchAtt, ...]
    uid: bool
    changed_since: int | None = None


@dataclass(frozen=True, slots=True)
class Store:
    messages: SequenceSet
    mode: str  # "+", "-" or ""
    silent: bool
    flags: tuple[str, ...]
    uid: bool
    unchanged_since: int | None = None


@dataclass(frozen=True, slots=True)
class CopyMove:
    messages: SequenceSet
    mailbox: str
    uid: bool
    move: bool


@dataclass(frozen=True, slots=True)
class Search:
    criteria: SearchKey
    uid: bool
    charset: str | None
    returns: tuple[str, ...] | None = None  # ESEARCH RETURN (...); None: plain SEARCH


# -- search keys ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllOf:
    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class Or:
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class Not:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class FlagKey:
    flag: str
    present: bool


@dataclass(frozen=True, slots=True)
class Recency:
    name: str  # NEW, OLD, RECENT


@dataclass(frozen=True, slots=True)
class HeaderKey:
    field: str
    value: str


@dataclass(frozen=True, slots=True)
class TextKey:
    where: str  # BODY or TEXT
    value: str


@dataclass(frozen=True, slots=True)
class DateKey:
    sent: bool  # the Date: header; else the internal date
    op: str  # BEFORE, ON, SINCE
    date: dt.date


@dataclass(frozen=True, slots=True)
class SizeKey:
    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class SetKey:
    messages: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    modseq: int


SearchKey = (
    AllOf
    | Or
    | Not
    | FlagKey
    | Recency
    | HeaderKey
    | TextKey
    | DateKey
    | SizeKey
    | SetKey
    | ModSeqKey
)

Command = (
    Simple | Login | Authenticate | Select | MailboxCommand | Rename | ListCommand | Status
    | Append | Enable | Id | GetQuota | Expunge | Fetch | Store | CopyMove | Search
)  # fmt: skip


# -- parsing -------------------------------------------------------------------------


class _Args:
    def __init__(self, tokens: Sequence[Token], utf8: bool) -> None:
        self._tokens = list(tokens)
        self._pos = 0
        self.utf8 = utf8

    def more(self) -> bool:
        return self._pos < len(self._tokens)

    def peek(self) -> Token | None:
        return self._tokens[self._pos] if self.more() else None

    def take(self, what: str) -> Token:
        if not self.more():
            raise CommandError(f"missing {what}")
        token = self._tokens[self._pos]
        self._pos += 1
        return token

    def atom(self, what: str) -> str:
        token = self.take(what)
        if not isinstance(token, Atom):
            raise CommandError(f"{what} must be an atom")
        return token.text

    def astring(self, what: str) -> str:
        return astring_of(self.take(what), what)

    def astring_bytes(self, what: str) -> bytes:
        token = self.take(what)
        if isinstance(token, Atom):
            return token.text.encode("utf-8", "surrogateescape")
        if isinstance(token, String):
            return token.data
        raise CommandError(f"{what} must be a string")

    def mailbox(self) -> str:
        return mailbox_name(self.astring("mailbox name"), utf8=self.utf8)

    def paren(self, what: str) -> tuple[Token, ...]:
        token = self.take(what)
        if not isinstance(token, ParenList):
            raise CommandError(f"{what} must be a parenthesised list")
        return token.items

    def number(self, what: str, *, limit: int = _MAX_NUMBER) -> int:
        text = self.atom(what)
        if not text.isdigit() or len(text) > 20 or int(text) > limit:
            raise CommandError(f"{what} must be a number")
        return int(text)

    def end(self) -> None:
        if self.more():
            raise CommandError("unexpected extra arguments")


def astring_of(token: Token, what: str) -> str:
    if isinstance(token, Atom):
        return token.text
    if isinstance(token, String):
        try:
            return token.data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise CommandError(f"{what} is not UTF-8") from error
    raise CommandError(f"{what} must be a string")


def mailbox_name(raw: str, *, utf8: bool) -> str:
    if raw.upper() == "INBOX":
        return "INBOX"
    if not utf8:
        raw = _from_mutf7(raw)
    if raw.upper().startswith("INBOX/"):
        raw = "INBOX" + raw[5:]
    return raw


def _from_mutf7(name: str) -> str:
    """A mailbox name as a client without UTF8=ACCEPT sends it: 7-bit, modified UTF-7."""
    if any(ord(char) > 0x7E for char in name):
        raise CommandError("8-bit mailbox name: use modified UTF-7")
    try:
        return decode_mutf7(name)
    except ValueError as error:
        raise CommandError("bad modified UTF-7 in mailbox name") from error


def parse_sequence_set(text: str) -> SequenceSet:
    ranges: list[tuple[int | None, int | None]] = []
    for part in text.split(","):
        ends = part.split(":")
        if len(ends) > 2 or not part:
            raise CommandError(f"bad sequence set {text[:40]!r}")
        numbers = [_seq_number(end, text) for end in ends]
        ranges.append((numbers[0], numbers[-1]))
    return SequenceSet(tuple(ranges))


def _seq_number(text: str, whole: str) -> int | None:
    if text == "*":
        return None
    if not _SEQ_NUMBER.match(text) or int(text) > _MAX_NUMBER:
        raise CommandError(f"bad sequence set {whole[:40]!r}")
    return int(text)


def flag_of(text: str) -> str:
    if text.startswith("\\"):
        known = _SYSTEM_BY_UPPER.get(text.upper())
        if known is None:
            raise CommandError(f"unknown system flag {text[:40]}")
        return known
    if not text or any(c in '(){%*"\\]' or ord(c) <= 0x20 or ord(c) >= 0x7F for c in text):
        raise CommandError(f"bad keyword {text[:40]!r}")
    return text


def _flags(items: Iterable[Token]) -> tuple[str, ...]:
    out: list[str] = []
    for item in items:
        if not isinstance(item, Atom):
            raise CommandError("flags must be atoms")
        flag = flag_of(item.text)
        if flag not in out:
            out.append(flag)
    return tuple(out)


def parse_date(text: str) -> dt.date:
    match = _DATE.match(text)
    if match is None or match.group(2).upper() not in _MONTHS:
        raise CommandError(f"bad date {text[:40]!r}")
    day, month, year = match.groups()
    try:
        return dt.date(int(year), _MONTHS.index(month.upper()) + 1, int(day))
    except ValueError as error:
        raise CommandError(f"bad date {text[:40]!r}") from error


def parse_date_time(text: str) -> dt.datetime:
    match = _DATE_TIME.match(text)
    if match is None or match.group(2).upper() not in _MONTHS:
        raise CommandError(f"bad date-time {text[:40]!r}")
    day, month, year, hour, minute, second, sign, zh, zm = match.groups()
    offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == "-" else 1)
    try:
        return dt.datetime(
            int(year), _MONTHS.index(month.upper()) + 1, int(day),
            int(hour), int(minute), int(second), tzinfo=dt.timezone(offset),
        )  # fmt: skip
    except ValueError as error:
        raise CommandError(f"bad date-time {text[:40]!r}") from error


def parse(name: str, args: Sequence[Token], *, utf8: bool = False) -> Command:
    """The command ``name`` (upper-cased, ``UID FETCH`` style) with its argument tokens."""
    reader = _Args(args, utf8)
    parser = _PARSERS.get(name)
    if parser is None:
        raise CommandError("unknown command")
    command = parser(reader, name)
    reader.end()
    return command


def _simple(_: _Args, name: str) -> Command:
    return Simple(name)


def _login(args: _Args, _: str) -> Command:
    return Login(args.astring("user name"), args.astring("password"))


def _authenticate(args: _Args, _: str) -> Command:
    mechanism = args.atom("mechanism").upper()
    initial = None
    if args.more():
        text = args.atom("initial response")
        initial = b"" if text == "=" else decode_base64(text)
    return Authenticate(mechanism, initial)


def decode_base64(text: str | bytes) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise CommandError("bad base64") from error


def _select(args: _Args, name: str) -> Command:
    mailbox = args.mailbox()
    condstore = False
    if args.more():
        for item in args.paren("select parameters"):
            if not (isinstance(item, Atom) and item.upper == "CONDSTORE"):
                raise CommandError("unknown select parameter")
            condstore = True
    return Select(mailbox, read_only=name == "EXAMINE", condstore=condstore)


def _mailbox_command(args: _Args, name: str) -> Command:
    mailbox = args.mailbox()
    uses: tuple[str, ...] = ()
    if name == "CREATE" and args.more():
        params = args.paren("create parameters")
        if len(params) != 2 or not (isinstance(params[0], Atom) and params[0].upper == "USE"):
            raise CommandError("unknown create parameter")
        if not isinstance(params[1], ParenList):
            raise CommandError("USE takes a list of attributes")
        uses = tuple(_atom_text(item, "special-use attribute") for item in params[1].items)
    return MailboxCommand(name, mailbox, uses)


def _atom_text(token: Token, what: str) -> str:
    if not isinstance(token, Atom):
        raise CommandError(f"{what} must be an atom")
    return token.text


def _rename(args: _Args, _: str) -> Command:
    return Rename(args.mailbox(), args.mailbox())


def _list(args: _Args, name: str) -> Command:
    select: tuple[str, ...] = ()
    if name == "LIST" and isinstance(args.peek(), ParenList):
        select = tuple(_atom_text(t, "selection option").upper() for t in args.paren("options"))
    reference = args.astring("reference")
    patterns_token = args.take("mailbox pattern")
    if isinstance(patterns_token, ParenList) and name == "LIST":
        patterns = tuple(astring_of(t, "pattern") for t in patterns_token.items)
    else:
        patterns = (astring_of(patterns_token, "pattern"),)
    if not args.utf8:
        patterns = tuple(_from_mutf7(p) for p in patterns)
    returns: list[str] = []
    status: tuple[str, ...] = ()
    if args.more():
        if args.atom("RETURN").upper() != "RETURN":
            raise CommandError("expected RETURN")
        options = list(args.paren("return options"))
        while options:
            option = _atom_text(options.pop(0), "return option").upper()
            if option == "STATUS":
                if not options or not isinstance(options[0], ParenList):
                    raise CommandError("STATUS takes a list")
                status = _status_items(options.pop(0).items)  # type: ignore[union-attr]
            else:
                returns.append(option)
    return ListCommand(reference, patterns, name == "LSUB", select, tuple(returns), status)


_STATUS_ITEMS: Final = frozenset(
    ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "DELETED")
)


def _status_items(tokens: Iterable[Token]) -> tuple[str, ...]:
    items = tuple(_atom_text(t, "status item").upper() for t in tokens)
    unknown = [item for item in items if item not in _STATUS_ITEMS]
    if unknown or not items:
        raise CommandError(f"unknown status item {unknown[0] if unknown else ''}".strip())
    return items


def _status(args: _Args, _: str) -> Command:
    mailbox = args.mailbox()
    return Status(mailbox, _status_items(args.paren("status items")))


def _append(args: _Args, _: str) -> Command:
    mailbox = args.mailbox()
    flags: tuple[str, ...] = ()
    date = None
    if isinstance(args.peek(), ParenList):
        flags = _flags(args.paren("flags"))
    token = args.peek()
    if isinstance(token, String) and not token.literal:
        args.take("date")
        date = parse_date_time(token.text)
    message = args.take("message")
    if not isinstance(message, String) or not message.literal:
        raise CommandError("the message must be a literal")
    return Append(mailbox, flags, date, message.data)


def _enable(args: _Args, _: str) -> Command:
    names = [args.atom("capability").upper()]
    while args.more():
        names.append(args.atom("capability").upper())
    return Enable(tuple(names))


def _id(args: _Args, _: str) -> Command:
    token = args.take("parameters")
    if isinstance(token, Atom) and token.upper == "NIL":
        return Id(())
    if not isinstance(token, ParenList) or len(token.items) % 2 or len(token.items) > 60:
        raise CommandError("ID takes NIL or a list of field-value pairs")
    items = token.items
    fields = []
    for key, value in zip(items[::2], items[1::2], strict=True):
        if not isinstance(key, String):
            raise CommandError("ID field names are strings")
        text = (
            None
            if isinstance(value, Atom) and value.upper == "NIL"
            else astring_of(value, "ID value")
        )
        fields.append((key.text[:30], None if text is None else text[:1024]))
    return Id(tuple(fields))


def _getquota(args: _Args, _: str) -> Command:
    return GetQuota(args.astring("quota root"))


def _expunge(args: _Args, name: str) -> Command:
    if name == "UID EXPUNGE":
        return Expunge(parse_sequence_set(args.atom("UID set")))
    return Expunge(None)


def _skip_uid_keyword(_: _Args, name: str) -> bool:
    """Whether this is the UID form (its tokens start after ``UID FETCH``)."""
    return name.startswith("UID ")


def _fetch(args: _Args, name: str) -> Command:
    uid = _skip_uid_keyword(args, name)
    messages = parse_sequence_set(args.atom("sequence set"))
    token = args.take("fetch attributes")
    if isinstance(token, ParenList):
        if not token.items:
            raise CommandError("empty fetch attribute list")
        items = [_fetch_att(t) for t in token.items]
    else:
        macro = _MACROS.get(token.upper) if isinstance(token, Atom) else None
        items = list(macro) if macro is not None else [_fetch_att(token)]
    changed_since = None
    if args.more():
        modifiers = list(args.paren("fetch modifiers"))
        while modifiers:
            modifier = _atom_text(modifiers.pop(0), "fetch modifier").upper()
            if modifier != "CHANGEDSINCE" or not modifiers:
                raise CommandError("unknown fetch modifier")
            changed_since = _number_of(modifiers.pop(0), "mod-sequence")
    if uid and not any(item.name == "UID" for item in items):
        items.insert(0, FetchAtt("UID"))
    if changed_since is not None and not any(item.name == "MODSEQ" for item in items):
        items.append(FetchAtt("MODSEQ"))
    return Fetch(messages, tuple(items), uid, changed_since)


def _number_of(token: Token, what: str) -> int:
    text = _atom_text(token, what)
    if not text.isdigit() or len(text) > 20:
        raise CommandError(f"{what} must be a number")
    return int(text)


_MACROS: Final = {
    "ALL": (
        FetchAtt("FLAGS"), FetchAtt("INTERNALDATE"), FetchAtt("RFC822.SIZE"), FetchAtt("ENVELOPE"),
    ),
    "FAST": (FetchAtt("FLAGS"), FetchAtt("INTERNALDATE"), FetchAtt("RFC822.SIZE")),
    "FULL": (
        FetchAtt("FLAGS"), FetchAtt("INTERNALDATE"), FetchAtt("RFC822.SIZE"),
        FetchAtt("ENVELOPE"), FetchAtt("BODY"),
    ),
}  # fmt: skip
_PLAIN_ATTS: Final = frozenset(
    (
        "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
        "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID", "MODSEQ",
    )
)  # fmt: skip
_SECTION_TEXTS: Final = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def _fetch_att(token: Token) -> FetchAtt:
    if not isinstance(token, Atom):
        raise CommandError("fetch attributes are atoms")
    text = token.text
    upper = text.upper()
    if upper in _PLAIN_ATTS:
        return FetchAtt(upper)
    open_at = text.find("[")
    head = upper[:open_at] if open_at >= 0 else upper
    if head not in ("BODY", "BODY.PEEK") or open_at < 0:
        raise CommandError(f"unknown fetch attribute {text[:40]}")
    close_at = text.rfind("]")
    section = parse_section(text[open_at + 1 : close_at])
    rest = text[close_at + 1 :]
    partial = None
    if rest:
        match = _PARTIAL.match(rest)
        if match is None:
            raise CommandError(f"bad partial {rest[:20]!r}")
        length = int(match.group(2)) if match.group(2) is not None else None
        partial = (int(match.group(1)), length)
    return FetchAtt("BODY[]", section, partial, peek=head.endswith(".PEEK"))


def parse_section(spec: str) -> Section:
    """``1.2.HEADER.FIELDS (From To)`` → Section((1, 2), "HEADER.FIELDS", ("FROM", "TO"))."""
    fields: tuple[str, ...] = ()
    if " " in spec:
        spec, _, rest = spec.partition(" ")
        if not (rest.startswith("(") and rest.endswith(")")):
            raise CommandError("bad header field list")
        fields = tuple(f.upper() for f in rest[1:-1].split(" ") if f)
        if not fields or any(not _field_name(f) for f in fields):
            raise CommandError("bad header field list")
    parts: list[int] = []
    text = ""
    pieces = spec.split(".") if spec else []
    while pieces and pieces[0].isdigit():
        number = int(pieces.pop(0))
        if number == 0 or len(parts) >= 32:
            raise CommandError("bad section part")
        parts.append(number)
    text = ".".join(pieces).upper()
    if text and text not in _SECTION_TEXTS:
        raise CommandError(f"bad section {spec[:40]!r}")
    if text == "MIME" and not parts:
        raise CommandError("MIME needs a part number")
    if text.startswith("HEADER.FIELDS") != bool(fields):
        raise CommandError("HEADER.FIELDS takes a field list")
    return Section(tuple(parts), text, fields)


def _field_name(name: str) -> bool:
    return all(0x21 <= ord(c) <= 0x7E and c != ":" for c in name)


def _store(args: _Args, name: str) -> Command:
    uid = _skip_uid_keyword(args, name)
    messages = parse_sequence_set(args.atom("sequence set"))
    unchanged_since = None
    if isinstance(args.peek(), ParenList):
        modifier = list(args.paren("store modifiers"))
        if (
            len(modifier) != 2
            or not isinstance(modifier[0], Atom)
            or modifier[0].upper != "UNCHANGEDSINCE"
        ):
            raise CommandError("unknown store modifier")
        unchanged_since = _number_of(modifier[1], "mod-sequence")
    item = args.atom("store item").upper()
    mode = item[0] if item[:1] in "+-" else ""
    base = item.lstrip("+-")
    if base not in ("FLAGS", "FLAGS.SILENT"):
        raise CommandError("STORE takes FLAGS, +FLAGS or -FLAGS")
    if isinstance(args.peek(), ParenList):
        flags = _flags(args.paren("flags"))
    else:
        atoms: list[Token] = []
        while args.more():
            atoms.append(args.take("flag"))
        flags = _flags(atoms)
    if "\\Recent" in flags:
        raise CommandError("\\Recent cannot be stored")
    return Store(messages, mode, base.endswith(".SILENT"), flags, uid, unchanged_since)


def _copy_move(args: _Args, name: str) -> Command:
    uid = _skip_uid_keyword(args, name)
    messages = parse_sequence_set(args.atom("sequence set"))
    return CopyMove(messages, args.mailbox(), uid, move=name.endswith("MOVE"))


def _search(args: _Args, name: str) -> Command:
    uid = _skip_uid_keyword(args, name)
    returns = None
    if isinstance(args.peek(), Atom) and args.peek().upper == "RETURN":  # type: ignore[union-attr]
        args.take("RETURN")
        returns = tuple(_atom_text(t, "return option").upper() for t in args.paren("RETURN"))
        returns = returns or ("ALL",)
        if any(r not in ("MIN", "MAX", "ALL", "COUNT") for r in returns):
            raise CommandError("unknown search return option")
    charset = None
    token = args.peek()
    if isinstance(token, Atom) and token.upper == "CHARSET":
        args.take("CHARSET")
        charset = args.astring("charset").upper()
    keys: list[SearchKey] = []
    while args.more():
        keys.append(_search_key(args, 0))
    if not keys:
        raise CommandError("missing search criteria")
    criteria = keys[0] if len(keys) == 1 else AllOf(tuple(keys))
    return Search(criteria, uid, charset, returns)


_FLAG_KEYS: Final = {
    "ANSWERED": ("\\Answered", True), "DELETED": ("\\Deleted", True),
    "DRAFT": ("\\Draft", True), "FLAGGED": ("\\Flagged", True), "SEEN": ("\\Seen", True),
    "UNANSWERED": ("\\Answered", False), "UNDELETED": ("\\Deleted", False),
    "UNDRAFT": ("\\Draft", False), "UNFLAGGED": ("\\Flagged", False),
    "UNSEEN": ("\\Seen", False),
}  # fmt: skip
_HEADER_KEYS: Final = ("BCC", "CC", "FROM", "SUBJECT", "TO")
_DATE_KEYS: Final = {
    "BEFORE": (False, "BEFORE"), "ON": (False, "ON"), "SINCE": (False, "SINCE"),
    "SENTBEFORE": (True, "BEFORE"), "SENTON": (True, "ON"), "SENTSINCE": (True, "SINCE"),
}  # fmt: skip


def _search_key(args: _Args, depth: int) -> SearchKey:
    if depth > _MAX_SEARCH_DEPTH:
        raise CommandError("search criteria nested too deeply")
    token = args.take("search key")
    if isinstance(token, ParenList):
        inner = _Args(token.items, args.utf8)
        keys = []
        while inner.more():
            keys.append(_search_key(inner, depth + 1))
        if not keys:
            raise CommandError("empty search list")
        return keys[0] if len(keys) == 1 else AllOf(tuple(keys))
    if not isinstance(token, Atom):
        raise CommandError("search keys are atoms")
    key = token.upper
    if key in _FLAG_KEYS:
        flag, present = _FLAG_KEYS[key]
        return FlagKey(flag, present)
    if key in _DATE_KEYS:
        sent, op = _DATE_KEYS[key]
        return DateKey(sent, op, parse_date(args.astring("date")))
    reader = _KEY_READERS.get(key)
    if reader is not None:
        return reader(args, key, depth)
    if key[:1].isdigit() or key[:1] == "*":
        return SetKey(parse_sequence_set(key), uid=False)
    raise CommandError(f"unknown search key {token.text[:40]}")


_KeyReader = Callable[[_Args, str, int], SearchKey]
_KEY_READERS: Final[dict[str, _KeyReader]] = {
    "ALL": lambda args, key, depth: AllOf(()),
    "KEYWORD": lambda args, key, depth: FlagKey(flag_of(args.atom("keyword")), True),
    "UNKEYWORD": lambda args, key, depth: FlagKey(flag_of(args.atom("keyword")), False),
    **dict.fromkeys(("NEW", "OLD", "RECENT"), lambda args, key, depth: Recency(key)),
    **dict.fromkeys(
        _HEADER_KEYS, lambda args, key, depth: HeaderKey(key, args.astring("search string"))
    ),
    "HEADER": lambda args, key, depth: HeaderKey(
        args.astring("header field").upper(), args.astring("search string")
    ),
    **dict.fromkeys(
        ("BODY", "TEXT"), lambda args, key, depth: TextKey(key, args.astring("search string"))
    ),
    **dict.fromkeys(
        ("LARGER", "SMALLER"),
        lambda args, key, depth: SizeKey(key == "LARGER", args.number("size")),
    ),
    "UID": lambda args, key, depth: SetKey(parse_sequence_set(args.atom("UID set")), uid=True),
    "NOT": lambda args, key, depth: Not(_search_key(args, depth + 1)),
    "OR": lambda args, key, depth: Or(_search_key(args, depth + 1), _search_key(args, depth + 1)),
    "MODSEQ": lambda args, key, depth: ModSeqKey(args.number("mod-sequence", limit=2**63 - 1)),
}


_PARSERS: Final = {
    **dict.fromkeys(
        (
            "CAPABILITY",
            "NOOP",
            "LOGOUT",
            "STARTTLS",
            "NAMESPACE",
            "IDLE",
            "CHECK",
            "CLOSE",
            "UNSELECT",
        ),
        _simple,
    ),
    "LOGIN": _login,
    "AUTHENTICATE": _authenticate,
    "SELECT": _select,
    "EXAMINE": _select,
    **dict.fromkeys(
        ("CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "GETQUOTAROOT"), _mailbox_command
    ),
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _list,
    "STATUS": _status,
    "APPEND": _append,
    "ENABLE": _enable,
    "ID": _id,
    "GETQUOTA": _getquota,
    "EXPUNGE": _expunge,
    "UID EXPUNGE": _expunge,
    "FETCH": _fetch,
    "UID FETCH": _fetch,
    "STORE": _store,
    "UID STORE": _store,
    "COPY": _copy_move,
    "UID COPY": _copy_move,
    "MOVE": _copy_move,
    "UID MOVE": _copy_move,
    "SEARCH": _search,
    "UID SEARCH": _search,
}
COMMANDS: Final = frozenset(_PARSERS)
