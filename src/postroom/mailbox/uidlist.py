"""A folder's UIDs on disk: ``dovecot-uidlist`` (version 3) and ``dovecot-keywords``.

``dovecot-uidlist``, as Dovecot writes it, so Dovecot reading the same Maildir keeps
the UIDs clients already hold::

    3 V<uidvalidity> N<uidnext> M<highestmodseq>
    <uid> W<size> M<modseq> :<base name>
    ...

The header's ``V`` and ``N`` and the records' ``W`` (size with CRLF line endings) are
Dovecot's; ``M`` (RFC 7162 modseqs) is postroom's own extension field, kept alongside
(Dovecot keeps extension fields it does not know). A base name is the message file's
name without its ``:2,`` info suffix, so a flag change (a rename) keeps the UID.
Records are in ascending UID order; UIDs are never reused (``N`` only grows).

``dovecot-keywords``: ``<index> <keyword>`` a line; index 0 is the letter ``a`` in a
file name's info suffix, 25 is ``z``.

Locking is Dovecot's dot-lock: whoever changes the list creates
``dovecot-uidlist.lock`` exclusively, writes the new list into it and renames it over
``dovecot-uidlist`` (which releases the lock). A lock older than ``STALE_AFTER``
seconds was left by a process that died and is broken. Deliveries never take it: they
only add files to ``new/`` (the Maildir protocol), which the next sync numbers.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "KEYWORDS_FILE",
    "LOCK_FILE",
    "STALE_AFTER",
    "UIDLIST_FILE",
    "LockTimeout",
    "Record",
    "UidList",
    "read_keywords",
    "read_uidlist",
    "render_uidlist",
    "uidlist_lock",
    "write_keywords",
]

UIDLIST_FILE: Final = "dovecot-uidlist"
LOCK_FILE: Final = "dovecot-uidlist.lock"
KEYWORDS_FILE: Final = "dovecot-keywords"
STALE_AFTER: Final = 30.0  # seconds; a sync holds the lock for far less
_WAIT: Final = 10.0  # seconds to wait for another process's lock
_FILE_MODE: Final = 0o600


class LockTimeout(OSError):
    """Another process held the folder's lock for longer than we wait."""


@dataclass(slots=True)
class Record:
    uid: int
    base: str
    size: int | None = None  # W: octets with CRLF line endings
    modseq: int = 1


@dataclass(slots=True)
class UidList:
    uidvalidity: int
    uidnext: int = 1
    highestmodseq: int = 1
    records: list[Record] = field(default_factory=list)


def read_uidlist(path: Path) -> UidList | None:
    """The list at ``path``; None when there is none or it cannot be read as one (it
    is then made afresh, with a new UIDVALIDITY, as Dovecot does)."""
    try:
        text = path.read_text("utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    lines = text.split("\n")
    header = lines[0].split(" ")
    if header[0] != "3":
        return None
    fields = {item[0]: item[1:] for item in header[1:] if item}
    try:
        uidlist = UidList(
            uidvalidity=int(fields["V"]),
            uidnext=int(fields.get("N", "1")),
            highestmodseq=int(fields.get("M", "1")),
        )
        last = 0
        for line in lines[1:]:
            if not line:
                continue
            head, _, base = line.partition(" :")
            parts = head.split(" ")
            record = Record(uid=int(parts[0]), base=base)
            for item in parts[1:]:
                if item.startswith("W"):
                    record.size = int(item[1:])
                elif item.startswith("M"):
                    record.modseq = int(item[1:])
            if record.uid <= last or not base:
                return None
            last = record.uid
            uidlist.records.append(record)
    except (KeyError, ValueError):
        return None
    uidlist.uidnext = max(uidlist.uidnext, last + 1)
    return uidlist


def render_uidlist(uidlist: UidList) -> bytes:
    lines = [f"3 V{uidlist.uidvalidity} N{uidlist.uidnext} M{uidlist.highestmodseq}"]
    for record in uidlist.records:
        size = f" W{record.size}" if record.size is not None else ""
        lines.append(f"{record.uid}{size} M{record.modseq} :{record.base}")
    return ("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape")


def read_keywords(path: Path) -> list[str]:
    """Keywords by index (``a`` is 0); an unreadable line leaves its index empty."""
    try:
        text = path.read_text("utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found: dict[int, str] = {}
    for line in text.splitlines():
        index, _, name = line.partition(" ")
        if index.isdigit() and int(index) < 26 and name:
            found[int(index)] = name
    return [found.get(i, "") for i in range(max(found, default=-1) + 1)]


def write_keywords(path: Path, keywords: list[str]) -> None:
    text = "".join(f"{i} {name}\n" for i, name in enumerate(keywords) if name)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, "utf-8")
    os.chmod(tmp, _FILE_MODE)
    os.replace(tmp, path)


class _Lock:
    """A held dot-lock: ``commit`` writes the new list through it, else it is removed."""

    def __init__(self, folder: Path, fd: int) -> None:
        self._folder = folder
        self._fd: int | None = fd

    def commit(self, uidlist: UidList) -> None:
        fd, self._fd = self._fd, None
        assert fd is not None, "one commit per lock"
        try:
            with open(fd, "wb", closefd=True) as file:
                file.write(render_uidlist(uidlist))
                file.flush()
                os.fsync(file.fileno())
            os.replace(self._folder / LOCK_FILE, self._folder / UIDLIST_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                (self._folder / LOCK_FILE).unlink()
            raise

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                (self._folder / LOCK_FILE).unlink()


@contextlib.contextmanager
def uidlist_lock(folder: Path, *, wait: float = _WAIT) -> Iterator[_Lock]:
    """Hold ``folder``'s dot-lock (blocking, in a worker thread); ``LockTimeout``
    after ``wait`` seconds of someone else holding it."""
    path = folder / LOCK_FILE
    give_up = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
            break
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - path.stat().st_mtime > STALE_AFTER:
                    path.unlink()  # its holder died; the next try takes it
                    continue
            if time.monotonic() > give_up:
                raise LockTimeout(f"{path} is held by another process") from None
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    lock = _Lock(folder, fd)
    try:
        yield lock
    finally:
        lock.release()
