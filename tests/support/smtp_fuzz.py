"""Random and mutated SMTP input for the fuzz test, from one ``random.Random``.

A case is a list of steps. Each step is built so that the client knows how the server
frames it (RFC 5321 and 3030: a command ends at LF, DATA at CRLF.CRLF, a BDAT chunk after
its count of octets), and so how many replies it owes: one per command line, one per
chunk. Junk lines never start with BDAT (a chunk's octets would be read unannounced);
in a pipelined batch they start with no verb that changes what the next line is.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Batch", "Chunked", "Line", "Step", "Transaction", "fuzz_case", "message_bodies"]

MODE_VERBS = {b"DATA", b"BDAT", b"AUTH", b"STARTTLS", b"QUIT"}
VERBS = [
    b"HELO", b"EHLO", b"MAIL", b"RCPT", b"RSET", b"NOOP", b"VRFY", b"HELP", b"EXPN",
    b"TURN", b"ETRN", b"XCLIENT", b"DATA", b"AUTH", b"STARTTLS", b"QUIT",
]  # fmt: skip
ARGUMENTS = [
    b"",
    b" ",
    b"client.test",
    b"[127.0.0.1]",
    b"[IPv6:::1]",
    b"FROM:<a@elsewhere.test>",
    b"FROM:<>",
    b"FROM: <bounce@sender.test> SIZE=1000 BODY=8BITMIME",
    b"FROM:<a@elsewhere.test> SIZE=99999999999999999999",
    b"FROM:<a@elsewhere.test> BODY=BINARYMIME SMTPUTF8 RET=HDRS ENVID=x+2Bx",
    b"FROM:<a@elsewhere.test> SIZE=1 SIZE=2",
    b"FROM:<\xc3\xa9l\xc3\xa8ve@\xc3\xa9cole.test> SMTPUTF8",
    b"FROM:<@route.test:a@b.test>",
    b"FROM:<a@[300.1.1.1]>",
    b"FROM:a@b.test",
    b"TO:<app@example.test>",
    b"TO:<postmaster>",
    b"TO:<Postmaster@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y.test",
    b"TO:<app@example.test> NOTIFY=NEVER,SUCCESS",
    b"TO:<victim@far-away.test>",
    b'TO:<"quoted local"@example.test>',
    b"TO:<a/b@example.test>",
    b"TO:<../../x@example.test>",
    b"PLAIN",
    b"PLAIN AGFwcEBleGFtcGxlLnRlc3QAd3Jvbmc=",
    b"PLAIN ====",
    b"LOGIN",
    b"LOGIN YQ==",
    b"CRAM-MD5",
    b"app@example.test",
    b"LAST",
]
SENDERS = [
    b"<a@elsewhere.test>", b"<bounce@sender.test>", b"<>", b"<app@example.test>",
    b"<x@unknown-domain.test>", b"<\xc3\xa9@\xc3\xa9cole.test> SMTPUTF8", b"<a@b>",
    b"<a@elsewhere.test> BODY=8BITMIME", b"<a@elsewhere.test> SIZE=10",
]  # fmt: skip
RECIPIENTS = [
    b"<app@example.test>", b"<postmaster@example.test>", b"<APP@EXAMPLE.TEST>",
    b"<nobody@example.test>", b"<friend@remote.test>", b"<app@example.test> NOTIFY=SUCCESS",
]  # fmt: skip
JUNK_BYTES = [b"\x00", b"\r", b"\x1b[2J", b"\xff\xfe", b"\xc3", b"\t", b"\x7f", b"\xe2\x80\xa8"]


@dataclass(frozen=True, slots=True)
class Line:
    """One command line on its own: one reply."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    """Command lines in one write (PIPELINING): one reply each, in order."""

    lines: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Chunked:
    """A BDAT command and what follows it: ``count`` octets are the chunk whatever the
    client meant; ``after`` (whole lines) is then read as commands."""

    count: int
    last: bool
    octets: bytes  # exactly ``count`` long
    after: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Transaction:
    """MAIL, RCPTs (pipelined or not), then DATA with the body, or BDAT chunks."""

    sender: bytes
    recipients: tuple[bytes, ...]
    body: bytes
    pipelined: bool
    chunks: tuple[Chunked, ...] | None  # None: DATA


Step = Line | Batch | Chunked | Transaction


def _verb(line: bytes) -> bytes:
    return line.strip(b" \t").split(b" ", 1)[0].upper()


def _junk(rng: random.Random, size: int) -> bytes:
    return bytes(rng.randrange(256) for _ in range(size)).replace(b"\n", b"")


def _mutate(rng: random.Random, data: bytes, *, keep_lines: bool = False) -> bytes:
    """A few random byte-level edits: flip, insert, delete, duplicate, truncate."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        where = rng.randrange(len(out) + 1)
        match rng.randrange(6):
            case 0 if out:
                out[min(where, len(out) - 1)] = rng.randrange(256)
            case 1:
                out[where:where] = rng.choice([*JUNK_BYTES, b"\r\n", b"\n", b":", b" ", b"."])
            case 2:
                del out[where : where + rng.randint(1, 8)]
            case 3:
                out[where:where] = out[where : where + rng.randint(1, 64)]
            case 4:
                del out[where:]
            case _:
                out[where:where] = _junk(rng, rng.randint(1, 32))
    result = bytes(out)
    return result.replace(b"\n", b"") if keep_lines else result


def _line_text(rng: random.Random) -> bytes:
    match rng.randrange(8):
        case 0:
            return _junk(rng, rng.randint(0, 80))
        case 1:  # longer than any command line may be
            return rng.choice(VERBS) + b" " + b"x" * rng.choice([600, 2100, 5000, 70000])
        case 2:
            return bytes(rng.choice(b" \t\r\x00") for _ in range(rng.randint(0, 5)))
        case 3:
            return _mutate(rng, rng.choice(VERBS) + b" " + rng.choice(ARGUMENTS), keep_lines=True)
        case _:
            verb = rng.choice(VERBS)
            verb = verb.lower() if rng.random() < 0.2 else verb
            separator = rng.choice([b" ", b" ", b" ", b"  ", b"\t", b""])
            return verb + separator + rng.choice(ARGUMENTS)


def junk_line(rng: random.Random, *, pipelined: bool = False) -> bytes:
    """A command line with its terminator (CRLF, or a bare LF, which ends a line too)."""
    text = _line_text(rng)
    verb = _verb(text)
    if verb == b"BDAT" or (pipelined and verb in MODE_VERBS):
        text = b"X" + text
    return text + (b"\r\n" if rng.random() < 0.85 else b"\n")


# -- messages --------------------------------------------------------------------------------
def _plain(author: bytes) -> bytes:
    return (
        b"From: Someone <" + author + b">\r\n"
        b"To: app@example.test\r\n"
        b"Subject: Hello\r\n"
        b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <1@example.test>\r\n"
        b"\r\n"
        b"Hello there.\r\n.leading dot\r\n..two dots\r\n"
    )


_MULTIPART = (
    b"From: app@example.test\r\nTo: app@example.test\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n"
    b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    b'caf\xc3\xa9\r\n--b1\r\nContent-Type: application/octet-stream; name="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b1--\r\n"
)
_HEADER_BREAKERS = [
    b"Subject hello without a colon\r\n",
    b"no colon at all\r\n",
    b": empty name\r\n",
    b" folded first line\r\n",
    b"X-\x00-Nul: a\r\n",
    b"From:\r\n",
    b"From: <>\r\n",
    b"From: a@example.test, b@other.test\r\n",
    b"From: group: a@example.test, b@other.test;\r\n",
    b"FROM :ceo@example.test\r\n",
    b"From: =?utf-8?q?=ZZbroken?= <a@example.test>\r\n",
    b"Sender: x@other.test\r\nResent-From: y@other.test\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=r1; h=from; bh=AAAA; b=AAAA\r\n",
    b"DKIM-Signature: v=1; a=ed25519-sha256; d=example.test; s=e1; b=\r\n",
    b"DKIM-Signature: garbage\r\n",
    b"Authentication-Results: mail.test; spf=pass smtp.mailfrom=bank.test\r\n",
    b"Content-Type: multipart/mixed; boundary=\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"X-Long: " + b"a" * 1200 + b"\r\n",
    b"X-Bare-CR: a\rb\r\n",
    b"X-Bare-LF: a\nb\r\n",
    b"X-8bit: \xe2\x82\xac \xff\r\n",
    b"\xff\xfe: binary name\r\n",
]


def _broken_headers(rng: random.Random, seed: bytes) -> bytes:
    head, _, body = seed.partition(b"\r\n\r\n")
    lines = [line + b"\r\n" for line in head.split(b"\r\n")]
    for _ in range(rng.randint(1, 4)):
        lines.insert(rng.randrange(len(lines) + 1), rng.choice(_HEADER_BREAKERS))
    if rng.random() < 0.3:
        rng.shuffle(lines)
    return b"".join(lines) + b"\r\n" + body


def message_bodies(signed: Sequence[bytes]) -> list[Callable[[random.Random], bytes]]:
    """Makers of message content: valid, broken header blocks, no header block, binary,
    huge lines, bare CR/LF/NUL, and byte-level mutations of valid (and DKIM-signed) ones."""
    seeds = [_plain(b"app@example.test"), _plain(b"news@sender.test"), _MULTIPART, *signed]

    def valid(rng: random.Random) -> bytes:
        return rng.choice(seeds)

    def broken(rng: random.Random) -> bytes:
        return _broken_headers(rng, rng.choice(seeds))

    def headless(rng: random.Random) -> bytes:
        return rng.choice([b"", b"\r\n", b"\r\nbody only\r\n", b"just text, no header\r\n"])

    def binary(rng: random.Random) -> bytes:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 3000)))

    def long_lines(rng: random.Random) -> bytes:
        return rng.choice(seeds) + b"y" * rng.choice([999, 10_000, 200_000]) + b"\r\n"

    def bare(rng: random.Random) -> bytes:
        seed = rng.choice(seeds)
        where = rng.randrange(len(seed))
        return seed[:where] + rng.choice([b"\r", b"\n", b"\x00", b"\r\x00\n"]) + seed[where:]

    def mutated(rng: random.Random) -> bytes:
        return _mutate(rng, rng.choice(seeds))

    return [valid, broken, broken, headless, binary, long_lines, bare, mutated, mutated]


# -- cases -----------------------------------------------------------------------------------
def _chunks(rng: random.Random, body: bytes) -> tuple[Chunked, ...]:
    if rng.random() < 0.3:  # a count that is not the size of what the client sends
        sent = body
        count = max(0, len(sent) + rng.randint(-40, 40))
        if count <= len(sent):  # the rest of what it sent is read as commands
            extra = sent[count:].replace(b"\n", b"") + b"\r\n"
            if _verb(extra) in MODE_VERBS:
                extra = b"X" + extra
            return (Chunked(count, True, sent[:count], (extra,)),)
        padding = bytes(rng.choice(b"RSET\r\n") for _ in range(count - len(sent)))
        return (Chunked(count, True, sent + padding),)
    cuts = sorted(rng.randrange(len(body) + 1) for _ in range(rng.randint(0, 2)))
    bounds = [0, *cuts, len(body)]
    parts = [body[a:b] for a, b in itertools.pairwise(bounds)]
    return tuple(Chunked(len(part), i == len(parts) - 1, part) for i, part in enumerate(parts))


def _transaction(rng: random.Random, makers: Sequence[Callable[[random.Random], bytes]]) -> Step:
    sender = rng.choice(SENDERS)
    if rng.random() < 0.1:
        sender = _mutate(rng, sender, keep_lines=True)
    recipients = tuple(rng.choice(RECIPIENTS) for _ in range(rng.choice([1, 1, 1, 2, 3])))
    body = rng.choice(makers)(rng)
    chunks = _chunks(rng, body) if rng.random() < 0.3 else None
    return Transaction(sender, recipients, body, rng.random() < 0.5, chunks)


def fuzz_case(rng: random.Random, makers: Sequence[Callable[[random.Random], bytes]]) -> list[Step]:
    """One to four steps, most of them whole transactions."""
    steps: list[Step] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.random()
        if kind < 0.45:
            steps.append(_transaction(rng, makers))
        elif kind < 0.7:
            steps.append(Line(junk_line(rng)))
        elif kind < 0.85:
            count = rng.randint(2, 6)
            steps.append(Batch(tuple(junk_line(rng, pipelined=True) for _ in range(count))))
        else:
            body = rng.choice(makers)(rng)
            steps.extend(_chunks(rng, body))  # BDAT outside a transaction: 503, octets read
    return steps
