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
``dovecot-uidlist.lock`` exclusively, then either writes the whole new list into it and
renames it over ``dovecot-uidlist`` (which releases the lock), or, when it only adds
records, appends them to ``dovecot-uidlist`` and removes the lock, as Dovecot does. An
appended list's header is not rewritten: its ``N`` and ``M`` may be behind, so a reader
takes the larger of the header and the records (Dovecot reads it so too). A line not
yet ended by a newline is being written (or was cut short by a crash) and is not read;
the next writer then rewrites the list. A lock older than ``STALE_AFTER`` seconds was
left by a process that died and is broken.

``LoadedList`` keeps what was read and where the reading stopped, so the next look at
a list that only grew reads the new lines alone (``load_uidlist``).
"""

from __future__ import annotations

import bisect
import contextlib
import os
import threading
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
    "LoadedList",
    "LockTimeout",
    "Record",
    "UidList",
    "UidListLock",
    "load_uidlist",
    "read_keywords",
    "read_uidlist",
    "record_line",
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
    loaded = load_uidlist(path, None)
    return loaded.uidlist if loaded is not None else None


@dataclass(slots=True, eq=False)
class LoadedList:
    """A list as read: its records, where each base name is, and how much was read."""

    uidlist: UidList
    inode: int
    length: int  # octets of whole lines read
    index: dict[str, int]  # base name -> UID

    def find(self, uid: int) -> int | None:
        """The position of ``uid``'s record."""
        records = self.uidlist.records
        at = bisect.bisect_left(records, uid, key=_record_uid)
        return at if at < len(records) and records[at].uid == uid else None

    def extended(self, records: list[Record], length: int) -> LoadedList:
        """This list with ``records`` appended, ``length`` long: a new ``LoadedList``
        over the same record list and index, grown in place (copying them made each
        delivery to a large mailbox cost as much as the mailbox is large)."""
        old = self.uidlist
        old.records.extend(records)
        self.index.update((r.base, r.uid) for r in records)
        uidlist = UidList(
            old.uidvalidity,
            max(old.uidnext, records[-1].uid + 1),
            max(old.highestmodseq, *(r.modseq for r in records)),
            old.records,
        )
        return LoadedList(uidlist, self.inode, length, self.index)


def _record_uid(record: Record) -> int:
    return record.uid


def load_uidlist(path: Path, known: LoadedList | None) -> LoadedList | None:
    """The list at ``path``, reading only what was appended since ``known`` when it is
    the same file grown; None as ``read_uidlist``."""
    try:
        with open(path, "rb") as file:
            found = os.fstat(file.fileno())
            if known is not None and found.st_ino == known.inode and found.st_size >= known.length:
                if found.st_size == known.length:
                    return known
                file.seek(known.length)
                tail = file.read()
                grown = _parse_records(tail, known)
                if grown is not None:
                    return grown
                file.seek(0)
            data = file.read()
    except FileNotFoundError:
        return None
    return _parse(data, found.st_ino)


def _parse(data: bytes, inode: int) -> LoadedList | None:
    end = data.find(b"\n")
    if end < 0:
        return None
    header = data[:end].decode("utf-8", errors="surrogateescape").split(" ")
    if header[0] != "3":
        return None
    fields = {item[0]: item[1:] for item in header[1:] if item}
    try:
        uidlist = UidList(
            uidvalidity=int(fields["V"]),
            uidnext=int(fields.get("N", "1")),
            highestmodseq=int(fields.get("M", "1")),
        )
    except (KeyError, ValueError):
        return None
    start = LoadedList(uidlist, inode, end + 1, {})
    return _parse_records(data[end + 1 :], start)


def _parse_records(tail: bytes, known: LoadedList) -> LoadedList | None:
    """``known`` and the whole lines of ``tail`` (what follows it in the file)."""
    whole = tail.rfind(b"\n") + 1  # a line without its newline is not written yet
    old = known.uidlist
    records: list[Record] = []
    last = old.records[-1].uid if old.records else 0
    uidnext, highestmodseq = old.uidnext, old.highestmodseq
    text = tail[:whole].decode("utf-8", errors="surrogateescape")
    try:
        for line in text.split("\n"):
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
            highestmodseq = max(highestmodseq, record.modseq)
            records.append(record)
    except ValueError:
        return None
    if not records:
        uidlist = UidList(old.uidvalidity, uidnext, highestmodseq, old.records)
        return LoadedList(uidlist, known.inode, known.length + whole, known.index)
    grown = known.extended(records, known.length + whole)
    grown.uidlist.uidnext = max(grown.uidlist.uidnext, uidnext)
    grown.uidlist.highestmodseq = max(grown.uidlist.highestmodseq, highestmodseq)
    return grown


def record_line(record: Record) -> str:
    size = f" W{record.size}" if record.size is not None else ""
    return f"{record.uid}{size} M{record.modseq} :{record.base}\n"


def render_uidlist(uidlist: UidList) -> bytes:
    header = f"3 V{uidlist.uidvalidity} N{uidlist.uidnext} M{uidlist.highestmodseq}\n"
    body = "".join(map(record_line, uidlist.records))
    return (header + body).encode("utf-8", errors="surrogateescape")


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


class UidListLock:
    """A held dot-lock: ``commit`` writes the new list through it, else it is removed."""

    def __init__(self, folder: Path, fd: int) -> None:
        self._folder = folder
        self._fd: int | None = fd

    def commit(self, uidlist: UidList) -> None:
        """Replace the list with ``uidlist``: a new file, fsynced and renamed over it, so
        a reader sees the old list or the new one whole. The lock stays held until
        released, so one holder may commit more than once (a sync that rewrites the
        list, then the change it was taken for)."""
        assert self._fd is not None, "commit while holding the lock"
        path = self._folder / UIDLIST_FILE
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, _FILE_MODE)
            with open(fd, "wb", closefd=True) as file:
                file.write(render_uidlist(uidlist))
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def append(self, records: list[Record]) -> int:
        """Add ``records`` at the end of the list (which must end with a newline);
        return the list's length after. The lock stays held until released."""
        assert self._fd is not None, "append while holding the lock"
        data = "".join(map(record_line, records)).encode("utf-8", errors="surrogateescape")
        fd = os.open(self._folder / UIDLIST_FILE, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        try:
            os.write(fd, data)  # a regular file takes the whole write
            os.fdatasync(fd)  # as Dovecot: a UID once seen is not given again after a crash
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                (self._folder / LOCK_FILE).unlink()


@contextlib.contextmanager
def uidlist_lock(folder: Path, *, wait: float = _WAIT) -> Iterator[UidListLock]:
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
    lock = UidListLock(folder, fd)
    try:
        yield lock
    finally:
        lock.release()
