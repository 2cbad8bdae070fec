"""Maildir++ quota: ``maildirsize``, kept up to date without reading the folders.

The file, in the account's Maildir (the Maildir++ quota specification; Courier's
deliverquota and Dovecot's maildir quota read and write it so)::

    1073741824S      the account's own limit, in octets ("" when the default applies)
    2150 3           octets and messages, as last measured
    1200 1           a message added (delivery, APPEND, COPY, MOVE's copy)
    -1200 -1         a message removed (EXPUNGE, MOVE's removal)

Every change appends a line in one ``O_APPEND`` write, so lines from several processes
never interleave; the usage is the sum of the lines after the first. The folders are
measured again, and the file replaced by the limit and one line of totals, when it has
no totals, has grown past ``RECALCULATE_OVER`` octets, sums to less than nothing, or
shows the account over its limit and was last changed ``STALE_AFTER`` seconds ago (a
message removed by a tool that does not write the file); that is the specification's
rule and Dovecot's. Sizes are the messages' sizes with CRLF line endings (``W=``, what
IMAP and POP3 report), as Dovecot counts them with ``quota_vsizes``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "QUOTA_FILE",
    "RECALCULATE_OVER",
    "STALE_AFTER",
    "QuotaFile",
    "add_usage",
    "read_quota_file",
    "write_limit",
    "write_totals",
]

QUOTA_FILE: Final = "maildirsize"
RECALCULATE_OVER: Final = 5120  # octets
STALE_AFTER: Final = 15 * 60.0  # seconds


@dataclass(frozen=True, slots=True)
class QuotaFile:
    limit: int | None  # the account's own limit; None: the configured default applies
    octets: int
    messages: int
    measured: bool  # it has totals (a line after the limit)
    length: int  # octets of the file
    mtime: float

    def needs_measuring(self, limit: int, now: float) -> bool:
        """Whether the totals are not to be trusted (see the module's docstring)."""
        if not self.measured or self.length > RECALCULATE_OVER:
            return True
        if self.octets < 0 or self.messages < 0:
            return True
        return 0 < limit <= self.octets and now - self.mtime > STALE_AFTER


def read_quota_file(path: Path | str) -> QuotaFile | None:
    try:
        with open(path, "rb") as file:
            found = os.fstat(file.fileno())
            text = file.read().decode("ascii", errors="replace")
    except FileNotFoundError:
        return None
    lines = text.split("\n")
    limit = None
    for part in lines[0].split(","):
        if part.endswith("S") and part[:-1].strip().isdigit():
            limit = int(part[:-1])
    octets = messages = 0
    measured = False
    for line in lines[1:]:
        fields = line.split()
        if len(fields) < 2:
            continue  # a line being written, or blank
        with contextlib.suppress(ValueError):
            octets += int(fields[0])
            messages += int(fields[1])
            measured = True
    return QuotaFile(limit, octets, messages, measured, found.st_size, found.st_mtime)


def add_usage(path: Path | str, octets: int, messages: int) -> None:
    """Append a change to ``path`` if the account has one (one that has none is
    measured when a limit first needs it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.write(fd, b"%d %d\n" % (octets, messages))
    finally:
        os.close(fd)


def write_totals(path: Path, limit: int | None, octets: int, messages: int) -> None:
    """Replace the file with the limit and one line of totals."""
    _replace(path, f"{_definition(limit)}\n{octets} {messages}\n")


def write_limit(path: Path, limit: int | None) -> None:
    """Set the limit line, keeping the totals (a limit is no reason to measure)."""
    try:
        rest = path.read_text("ascii", errors="replace").partition("\n")[2]
    except FileNotFoundError:
        rest = ""
    _replace(path, f"{_definition(limit)}\n{rest}")


def _definition(limit: int | None) -> str:
    return f"{limit}S" if limit is not None else ""


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        tmp.write_text(text, "ascii")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
