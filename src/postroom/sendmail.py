"""``postroom-sendmail``: the sendmail(1) command line, queueing into the local store.

For PHP's ``sendmail_path``, cron, git send-email and anything else that runs
``/usr/sbin/sendmail``. The message is read from standard input and queued straight into
the store through intake (source ``sendmail``, principal: the Unix user), then a running
server is woken to deliver it. Options follow Postfix's sendmail(1): ``-t`` takes the
recipients from To/Cc/Bcc (added to any given as arguments), ``-f``/``-r`` set the
envelope sender, ``-F`` the full name, ``-i``/``-oi`` keep a lone "." from ending the
input; ``-N``, ``-R`` and ``-V`` are the DSN options; the other common flags are
accepted and ignored, and the modes postroom does not have (``-bs``, ``-bv``, ``-q``,
newaliases ...) are refused with EX_USAGE, as is an option value that starts with
"-" (``-f -t``: a caller's mistake, or an injected option). ``-h``/``--help`` print
the usage; ``-h N`` (sendmail's hop count) is ignored. Exit codes follow sysexits.h. The
message is never lost: anything that keeps it from the queue ends non-zero with one
line on standard error, so the caller keeps (or reports) it.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import getopt
import os
import pwd
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.errors import HeaderDefect, NonASCIILocalPartDefect
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from enum import IntEnum
from pathlib import Path
from typing import BinaryIO, NoReturn

from postroom.config import load
from postroom.config.discover import find_config
from postroom.config.settings import Settings
from postroom.delivery.tracking import route_tracking
from postroom.errors import AddressError, ConfigError
from postroom.intake.cleanup import header_fields, tidy_field
from postroom.intake.local import LocalResult, local_user, submit_local
from postroom.mail.address import Address, parse_address
from postroom.mail.envelope import DsnRequest, Notify, Recipient, Ret
from postroom.smtp.replies import Reply

__all__ = ["Exit", "Options", "Prepared", "SendmailError", "main", "parse_args", "prepare"]

PROG = "postroom-sendmail"


class Exit(IntEnum):
    """sysexits.h"""

    OK = 0
    USAGE = 64  # a command line we do not accept, or no recipients
    DATAERR = 65  # a malformed address, or a message too big
    NOUSER = 67  # a recipient refused (e.g. no such user at a local domain)
    UNAVAILABLE = 69  # refused for another permanent reason
    SOFTWARE = 70  # a bug in postroom
    TEMPFAIL = 75  # not queued now; try again later
    NOPERM = 77  # a sender or author this user may not use ([senders.sendmail])
    CONFIG = 78  # the configuration file is missing or wrong


class SendmailError(Exception):
    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code


# Postfix's sendmail option letters; ":" takes a value (attached, or the next argument).
_SHORT_OPTIONS = "A:B:C:F:GIL:N:O:R:UV:X:b:ce:f:himno:p:r:q:tvx"
_LONG_OPTIONS = ("config=", "help", "version")
_IGNORED = frozenset(("-A", "-G", "-L", "-O", "-U", "-X", "-c", "-e", "-m", "-n", "-p", "-x"))
_HOP_COUNT = re.compile(r"-h\d+")  # sendmail's -hN, attached
USAGE = f"""\
usage: {PROG} [options] [recipient ...] < message

Queues the message on standard input for delivery by postroom.

  -t              also take recipients from To, Cc and Bcc (or the Resent- ones)
  -f ADDR, -r ADDR  envelope sender ("<>" for none); default user@hostname
  -F NAME         full name for a From header postroom adds
  -i, -oi         a line with only "." does not end the message
  -B 8BITMIME     the body is 8-bit
  -N LIST         DSN NOTIFY: never, or success,delay,failure
  -R full|hdrs    DSN RET
  -V ENVID        DSN ENVID
  -v              print the queue id on standard error
  -C FILE, --config FILE  the configuration file (else $POSTROOM_CONFIG, else
                  ./postroom.toml, else /etc/postroom/postroom.toml)
  -h, --help      print this help
  --version       print postroom's version

Exit status (sysexits.h): 0 queued, 64 usage, 65 data error (a bad address, a message
too big, too many recipients), 67 recipient refused, 69 refused, 75 try again later
(also when there is no store yet: `postroom serve` makes it), 78 configuration error.
"""
# -b modes other than -bm (deliver a message read from stdin, the default), and why not.
_REFUSED_MODES = {
    "d": "no daemon mode; run `postroom serve`",
    "h": "no SMTP test mode; use `postroom route explain`",
    "H": "no SMTP test mode; use `postroom route explain`",
    "i": "no aliases file",
    "l": "no daemon mode; run `postroom serve`",
    "p": "no queue listing here; use `postroom queue list`",
    "s": "no SMTP on standard input; use the submission port",
    "v": "no address verification",
}
_NOTIFY = {n.value.lower(): n for n in Notify}
_RECIPIENT_HEADERS = ("To", "Cc", "Bcc")


@dataclass(frozen=True, slots=True)
class Options:
    recipients: tuple[str, ...] = ()
    extract: bool = False  # -t
    show_help: bool = False  # -h / --help
    show_version: bool = False  # --version
    sender: str | None = None  # -f / -r; "" or "<>" is the null sender
    full_name: str | None = None  # -F
    dot_ends_input: bool = True  # cleared by -i / -oi
    config: Path | None = None  # -C / --config
    eight_bit: bool = False  # -B8BITMIME
    notify: frozenset[Notify] | None = None  # -N
    ret: Ret | None = None  # -R
    envid: str | None = None  # -V
    verbose: bool = False  # -v: print the queue id


def parse_args(argv: Sequence[str]) -> Options:
    """The command line (without the program name); SendmailError(USAGE) when wrong."""
    try:
        pairs, arguments = getopt.gnu_getopt(
            _without_hop_count(argv), _SHORT_OPTIONS, list(_LONG_OPTIONS)
        )
    except getopt.GetoptError as exc:
        raise SendmailError(Exit.USAGE, str(exc)) from None
    values: dict[str, object] = {"recipients": tuple(arguments)}
    for flag, value in pairs:
        if value.startswith("-"):
            raise SendmailError(Exit.USAGE, f"{flag} {value}: an option value cannot start with -")
        _apply(flag, value, values)
    asked = "-h/--help" if values.get("show_help") else "--version"
    if (values.get("show_help") or values.get("show_version")) and (
        arguments or values.get("extract")
    ):
        # Help with a message to send: exiting 0 would lose the message without a word.
        raise SendmailError(Exit.USAGE, f"{asked} takes no recipients; nothing was queued")
    return Options(**values)  # type: ignore[arg-type]


def _without_hop_count(argv: Sequence[str]) -> list[str]:
    """The arguments without sendmail's ``-h N`` / ``-hN`` hop count (ignored), so that
    ``-h`` alone can ask for help."""
    kept: list[str] = []
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--":
            kept += [argument, *arguments]
        elif _HOP_COUNT.fullmatch(argument):
            continue
        elif argument == "-h":
            following = next(arguments, None)
            if following is None or not following.isdigit():
                kept += [argument, *([following] if following is not None else [])]
        else:
            kept.append(argument)
    return kept


# One case per flag: the match is sendmail's option table, read top to bottom; split up,
# the table would be scattered over a dozen one-line functions.
def _apply(flag: str, value: str, values: dict[str, object]) -> None:  # noqa: C901
    match flag:
        case "-t":
            values["extract"] = True
        case "-h" | "--help":
            values["show_help"] = True
        case "--version":
            values["show_version"] = True
        case "-i":
            values["dot_ends_input"] = False
        case "-o":
            # -oi is -i; -odi, -odb, -oem, -oee, -om ... set modes postroom has no use for.
            if value == "i":
                values["dot_ends_input"] = False
        case "-f" | "-r":
            values["sender"] = value
        case "-F":
            values["full_name"] = value
        case "-C" | "--config":
            values["config"] = Path(value)
        case "-B":
            if value.upper() not in ("7BIT", "8BITMIME"):
                raise SendmailError(Exit.USAGE, f"-B {value}: must be 7BIT or 8BITMIME")
            values["eight_bit"] = value.upper() == "8BITMIME"
        case "-N":
            values["notify"] = _parse_notify(value)
        case "-R":
            if value.upper() not in ("FULL", "HDRS"):
                raise SendmailError(Exit.USAGE, f"-R {value}: must be full or hdrs")
            values["ret"] = Ret(value.upper())
        case "-V":
            if not value or len(value) > 100 or not value.isascii() or not value.isprintable():
                raise SendmailError(Exit.USAGE, "-V: the envelope id must be printable ASCII")
            values["envid"] = value
        case "-v":
            values["verbose"] = True
        case "-b":
            if value != "m":
                why = _REFUSED_MODES.get(value[:1], "not a mode postroom has")
                raise SendmailError(Exit.USAGE, f"-b{value}: {why}")
        case "-I":
            raise SendmailError(Exit.USAGE, f"-I: {_REFUSED_MODES['i']}")
        case "-q":
            raise SendmailError(Exit.USAGE, "-q: the server runs its queue; see `postroom queue`")
        case _:
            assert flag in _IGNORED, flag


def _parse_notify(value: str) -> frozenset[Notify]:
    """-N never | a comma list of success, delay, failure (RFC 3461 4.1)."""
    words = [w.strip().lower() for w in value.split(",")]
    if any(w not in _NOTIFY for w in words) or ("never" in words and len(words) > 1):
        raise SendmailError(
            Exit.USAGE, f"-N {value}: must be never, or a list of success, delay, failure"
        )
    return frozenset(_NOTIFY[w] for w in words)


def read_message(stream: BinaryIO, *, limit: int, dot_ends_input: bool) -> bytes:
    """Standard input up to end of file (or a line with only "." unless -i), at most
    ``limit`` bytes; SendmailError(DATAERR) when longer."""
    if not dot_ends_input:
        data = stream.read(limit + 1)
    else:
        lines: list[bytes] = []
        size = 0
        while line := stream.readline(limit + 1 - size):
            if line in (b".\n", b".\r\n"):
                break
            lines.append(line)
            size += len(line)
            if size > limit:
                break
        data = b"".join(lines)
    if len(data) > limit:
        raise SendmailError(Exit.DATAERR, f"message too big (the limit is {limit} bytes)")
    return data


@dataclass(frozen=True, slots=True)
class Prepared:
    """A message ready for intake (From added when missing) and its envelope."""

    data: bytes
    sender: Address | None
    recipients: tuple[Recipient, ...]
    body_type: str
    smtputf8: bool
    dsn: DsnRequest = field(default_factory=DsnRequest)


def prepare(data: bytes, options: Options, *, hostname: str, user: str) -> Prepared:
    """Envelope from the options (and headers with -t), and From added when missing (with
    -F's name, or the passwd one), as sendmail does. The rest of the clean-up (line
    endings, Date, Message-ID, Bcc) is intake's, the same for every source."""
    fields, _, _ = header_fields(data)
    tidy = [tidy_field(f) for f in fields]
    head = b"".join(f for _, f in tidy) + b"\n"
    parsed = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
    sender = _sender(options.sender, hostname, user)
    recipients = [_local(a, hostname, "recipient") for a in _argument_addresses(options)]
    if options.extract:
        recipients += _header_recipients(parsed, hostname)
    if not recipients:
        raise SendmailError(
            Exit.USAGE, "no recipients given (as arguments, or in To/Cc/Bcc with -t)"
        )
    if b"from" not in {name for name, _ in tidy}:
        author = f"From: {_from_header(sender, options.full_name, hostname, user)}\r\n"
        end = sum(len(f) for f in fields)
        # Without a header block the input is all body: the new field gets one of its own.
        separator = "\r\n" if not fields and data[:1] not in (b"\r", b"\n") else ""
        data = data[:end] + (author + separator).encode() + data[end:]
    unique = {a.key: a for a in recipients}
    everyone = [*unique.values(), *([sender] if sender else [])]
    return Prepared(
        data=data,
        sender=sender,
        recipients=tuple(Recipient(a, notify=options.notify) for a in unique.values()),
        body_type="8BITMIME" if options.eight_bit or not data.isascii() else "7BIT",
        smtputf8=any(a.needs_smtputf8 for a in everyone),
        dsn=DsnRequest(ret=options.ret, envid=options.envid),
    )


def _sender(given: str | None, hostname: str, user: str) -> Address | None:
    if given is None:
        return _local(user, hostname, "sender")
    if given.strip() in ("", "<>"):
        return None  # the null reverse-path (RFC 5321 4.5.5), e.g. for bounces
    return _local(given, hostname, "sender")


def _local(text: str, hostname: str, what: str) -> Address:
    """An address; a bare user name is qualified with the hostname, as sendmail does."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if "@" not in text and text:
        text = f"{text}@{hostname}"
    try:
        return parse_address(text)
    except AddressError as exc:
        raise SendmailError(Exit.DATAERR, f"{what} {text!r}: {exc}") from None


def _argument_addresses(options: Options) -> list[str]:
    """Arguments may be address lists ("a@x, B <b@y>") as in sendmail."""
    found: list[str] = []
    for argument in options.recipients:
        pairs = email.utils.getaddresses([argument])
        if not pairs or any(not address for _, address in pairs):
            raise SendmailError(Exit.DATAERR, f"recipient {argument!r} is not a valid address")
        found.extend(address for _, address in pairs)
    return found


def _header_recipients(parsed: EmailMessage, hostname: str) -> list[Address]:
    try:
        return _recipients_in(parsed, hostname)
    except SendmailError:
        raise
    except Exception:  # the email package's parser can fail outright on a broken list
        raise SendmailError(Exit.DATAERR, "the recipient headers cannot be parsed") from None


def _recipients_in(parsed: EmailMessage, hostname: str) -> list[Address]:
    # RFC 5322 3.6.6: a resent message goes to its Resent- recipients.
    names: tuple[str, ...] = _RECIPIENT_HEADERS
    if any(parsed.get(f"Resent-{n}") is not None for n in names):
        names = tuple(f"Resent-{n}" for n in names)
    found: list[Address] = []
    for name in names:
        for value in parsed.get_all(name, []):
            if any(_serious(d) for d in getattr(value, "defects", ())):
                raise SendmailError(Exit.DATAERR, f"the {name} header holds an invalid address")
            found.extend(_local(a.addr_spec, hostname, "recipient") for a in value.addresses)
    return found


# Defects that sendmail accepts: a bare user name ("To: root", qualified with the hostname),
# an empty list entry ("a@x, , b@y") and a UTF-8 local part (RFC 6532).
_BENIGN_DEFECTS = frozenset(
    {"addr-spec local part with no domain", "address-list entry with no content"}
)


def _serious(defect: object) -> bool:
    if isinstance(defect, NonASCIILocalPartDefect):
        return False
    return isinstance(defect, HeaderDefect) and str(defect) not in _BENIGN_DEFECTS


def _from_header(sender: Address | None, full_name: str | None, hostname: str, user: str) -> str:
    own = sender is None or str(sender) == f"{user}@{hostname}"
    address = f"{user}@{hostname}" if sender is None else str(sender)
    # The passwd full name belongs to the user's own address only, not to one given by -f.
    name = full_name if full_name is not None else _gecos_name(user) if own else ""
    name = re.sub(r"[\r\n\x00]", "", name).strip()
    return email.utils.formataddr((name, address), charset="utf-8")


def _gecos_name(user: str) -> str:
    """The full name in the passwd entry, as other sendmails put in From."""
    try:
        return pwd.getpwnam(user).pw_gecos.split(",", 1)[0]
    except KeyError:
        return ""


# -- the command -----------------------------------------------------------------------


def run(argv: Sequence[str], stdin: BinaryIO) -> Exit:
    options = parse_args(argv)
    if options.show_help:
        print(USAGE, end="")
        return Exit.OK
    if options.show_version:
        from importlib.metadata import version

        print(f"{PROG} (postroom) {version('postroom')}")
        return Exit.OK
    source = find_config(options.config, os.environ, Path.cwd())
    try:
        settings = load(source.path)
    except ConfigError as exc:
        raise SendmailError(Exit.CONFIG, str(exc)) from None
    data = read_message(
        stdin, limit=settings.limits.max_message_size, dot_ends_input=options.dot_ends_input
    )
    user = local_user()
    prepared = prepare(data, options, hostname=settings.hostname, user=user)
    if len(prepared.data) > settings.limits.max_message_size:
        raise SendmailError(Exit.DATAERR, "message too big")
    limit = settings.limits.max_recipients
    if len(prepared.recipients) > limit:
        raise SendmailError(
            Exit.DATAERR,
            f"too many recipients: {len(prepared.recipients)} (limits.max_recipients is {limit})",
        )
    queued = _queue(settings, user, prepared)
    if options.verbose:
        woke = "a running server was told" if queued.woke_server else "no server is listening"
        print(f"{PROG}: queued as {queued.queue_id}; {woke}", file=sys.stderr)
    return Exit.OK


def _queue(settings: Settings, user: str, prepared: Prepared) -> LocalResult:
    try:
        result = asyncio.run(
            submit_local(
                settings,
                user=user,
                sender=prepared.sender,
                recipients=prepared.recipients,
                data=prepared.data,
                dsn=prepared.dsn,
                body_type=prepared.body_type,
                smtputf8=prepared.smtputf8,
                route_tracking=route_tracking(settings),
            )
        )
    except Exception as exc:  # any store failure: the message is not queued, say so
        raise SendmailError(Exit.TEMPFAIL, f"cannot queue the message: {_describe(exc)}") from None
    if isinstance(result, Reply):
        words = (str(result.code), result.enhanced or "", *result.lines)
        raise SendmailError(_exit_for(result), f"refused: {' '.join(w for w in words if w)}")
    return result


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc) or type(exc).__name__


def _exit_for(reply: Reply) -> Exit:
    if reply.is_transient:
        return Exit.TEMPFAIL
    enhanced = reply.enhanced or ""
    if enhanced.startswith("5.1."):  # addressing status (RFC 3463 3.2)
        return Exit.NOUSER
    if enhanced == "5.3.4" or enhanced.startswith("5.6."):  # too big; media error (NUL)
        return Exit.DATAERR
    if enhanced == "5.7.1":  # delivery not authorized: a sender domain not allowed
        return Exit.NOPERM
    return Exit.UNAVAILABLE


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console script entry point: exit with a sysexits.h code."""
    try:
        code = run(sys.argv[1:] if argv is None else argv, sys.stdin.buffer)
    except SendmailError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        code = exc.code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the message was not queued", file=sys.stderr)
        code = Exit.TEMPFAIL
    except Exception as exc:  # a bug; still one line, and the caller keeps the message
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = Exit.SOFTWARE
    sys.exit(int(code))
