"""The tokens of one IMAP command, from its lines and literals (RFC 3501 9).

A command arrives as pieces: text lines (without CRLF and without their trailing literal
marker) and the literals' bytes. ``tokenize`` turns them into atoms, strings (quoted or
literal) and parenthesised lists, nested. An atom may carry a bracketed part with spaces
and parentheses inside (``BODY[HEADER.FIELDS (From To)]<0.100>``), as the fetch and
response-code grammar need. Nothing here raises but ``TokenError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_DEPTH", "Atom", "Literal", "ParenList", "String", "Token", "TokenError", "tokenize"]

MAX_DEPTH: Final = 16  # nested lists (SEARCH, BODYSTRUCTURE-like input); deeper is refused
_ATOM_STOP: Final = frozenset(' (){"\\')
_QUOTED_ESCAPES: Final = frozenset('"\\')


class TokenError(ValueError):
    """The command's syntax is broken; the message says where, for a BAD reply."""


@dataclass(frozen=True, slots=True)
class Atom:
    text: str  # as sent; commands compare it upper-cased

    @property
    def upper(self) -> str:
        return self.text.upper()


@dataclass(frozen=True, slots=True)
class String:
    data: bytes
    literal: bool = False

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "surrogateescape")


@dataclass(frozen=True, slots=True)
class ParenList:
    items: tuple[Token, ...]


Token = Atom | String | ParenList


@dataclass(frozen=True, slots=True)
class Literal:
    """A literal's bytes, in the place of the ``{n}`` that announced it."""

    data: bytes


class _Reader:
    def __init__(self, pieces: list[bytes | Literal]) -> None:
        self._pieces = pieces
        self._index = 0
        self._text = ""
        self._pos = 0
        self._load()

    def _load(self) -> None:
        piece = self._pieces[self._index] if self._index < len(self._pieces) else b""
        assert not isinstance(piece, Literal)
        self._text = piece.decode("utf-8", "surrogateescape")
        self._pos = 0

    def at_line_end(self) -> bool:
        return self._pos >= len(self._text)

    def literal_next(self) -> bool:
        nxt = self._index + 1
        return self.at_line_end() and nxt < len(self._pieces)

    def take_literal(self) -> bytes:
        literal = self._pieces[self._index + 1]
        assert isinstance(literal, Literal)
        self._index += 2
        self._load()
        return literal.data

    def peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def advance(self, n: int = 1) -> None:
        self._pos += n

    def take_while_atom(self) -> str:
        text, start, pos = self._text, self._pos, self._pos
        if text.startswith("\\", pos):  # a system flag or attribute: \Seen, \Noselect
            pos += 1
        while pos < len(text):
            char = text[pos]
            if char == "[":
                end = text.find("]", pos)
                if end < 0:
                    raise TokenError("missing ] in atom")
                pos = end + 1
                continue
            if char in _ATOM_STOP or ord(char) < 0x20 or ord(char) == 0x7F:
                break
            pos += 1
        self._pos = pos
        return text[start:pos]

    def take_quoted(self) -> bytes:
        self.advance()  # the opening quote
        text, pos = self._text, self._pos
        out: list[str] = []
        while pos < len(text):
            char = text[pos]
            if char == '"':
                self._pos = pos + 1
                return "".join(out).encode("utf-8", "surrogateescape")
            if char == "\\":
                pos += 1
                if pos >= len(text) or text[pos] not in _QUOTED_ESCAPES:
                    raise TokenError("bad escape in quoted string")
                char = text[pos]
            out.append(char)
            pos += 1
        raise TokenError("unterminated quoted string")


def tokenize(pieces: list[bytes | Literal]) -> list[Token]:
    """The tokens of a whole command: ``pieces`` alternate text lines and literals, each
    literal following the line that announced it (its marker already cut off).

    Arguments are separated by one space; a list opens with ``(`` and closes with ``)``
    with no space inside either.
    """
    return _Tokenizer(_Reader(pieces)).run()


class _Tokenizer:
    def __init__(self, reader: _Reader) -> None:
        self.reader = reader
        self.stack: list[list[Token]] = [[]]
        self.need_space = False  # a token just ended: a space, ")" or the end comes next
        self.spaced = False  # a space was just read: a token comes next

    def run(self) -> list[Token]:
        reader = self.reader
        while True:
            if reader.at_line_end():
                if not reader.literal_next():
                    break
                if self.need_space:
                    raise TokenError("expected a space before a literal")
                self._push(String(reader.take_literal(), literal=True))
                continue
            self._step(reader.peek())
        if self.spaced:
            raise TokenError("trailing space")
        if len(self.stack) != 1:
            raise TokenError("unbalanced (")
        return self.stack[0]

    def _push(self, token: Token) -> None:
        self.stack[-1].append(token)
        self.need_space, self.spaced = True, False

    def _step(self, char: str) -> None:
        reader, stack = self.reader, self.stack
        if char == ")":
            if self.spaced or len(stack) == 1:
                raise TokenError("unexpected )")
            reader.advance()
            items = stack.pop()
            self._push(ParenList(tuple(items)))
        elif self.need_space:
            if char != " ":
                raise TokenError("expected a space between arguments")
            reader.advance()
            self.need_space, self.spaced = False, True
        elif char == "(":
            if len(stack) > MAX_DEPTH:
                raise TokenError("lists nested too deeply")
            reader.advance()
            stack.append([])
            self.spaced = False
        elif char == '"':
            self._push(String(reader.take_quoted()))
        else:
            atom = reader.take_while_atom()
            if not atom:
                raise TokenError(f"unexpected character {char!r}")
            self._push(Atom(atom))
