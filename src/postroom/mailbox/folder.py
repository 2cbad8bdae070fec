"""One Maildir folder: its messages with UIDs and flags, kept in step with its files.

Blocking file work, run in worker threads by ``mailbox.account``. A message is a file
in ``cur/`` named ``<base>:2,<letters>``: upper-case letters are the system flags
(``D`` \\Draft, ``F`` \\Flagged, ``R`` \\Answered, ``S`` \\Seen, ``T`` \\Deleted,
in ASCII order, as the Maildir spec and Dovecot and mutt write them; others such as
``P`` are kept as found), lower-case letters the folder's keywords (``dovecot-keywords``).

A *sync* numbers what is new: files in ``new/`` move to ``cur/`` (gaining ``:2,``),
every base name not in ``dovecot-uidlist`` gets the next UID, and records whose file is
gone (expunged by another process or tool) are dropped. A sync that finds nothing to
change takes no lock and writes nothing; one that does holds the folder's lock
(``uidlist.uidlist_lock``) from reading the list to writing it. What a sync saw is kept
(``Snapshot``) and reused while ``new/``, ``cur/`` and the list keep their mtimes, so a
second look at a large folder costs three ``stat`` calls.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Concatenate, Final, ParamSpec, TypeVar

from postroom.mailbox.base import (
    ANSWERED,
    DELETED,
    DRAFT,
    FLAGGED,
    SEEN,
    SYSTEM_FLAGS,
    FlagChange,
    FolderStatus,
    MessageInfo,
    TooManyKeywords,
)
from postroom.mailbox.message import crlf_size
from postroom.mailbox.uidlist import (
    KEYWORDS_FILE,
    UIDLIST_FILE,
    Record,
    UidList,
    read_keywords,
    read_uidlist,
    uidlist_lock,
    write_keywords,
)

__all__ = ["INFO", "FolderFiles", "Snapshot", "change_stamp", "flags_of", "info_suffix"]

INFO: Final = ":2,"
_LETTERS: Final = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
_FLAG_LETTERS: Final = {flag: letter for letter, flag in _LETTERS.items()}


def flags_of(name: str, keywords: list[str]) -> frozenset[str]:
    """The flags a file name's info suffix holds."""
    _, sep, info = name.partition(INFO)
    if not sep:
        return frozenset()
    flags: set[str] = set()
    for letter in info:
        if letter in _LETTERS:
            flags.add(_LETTERS[letter])
        elif "a" <= letter <= "z":
            index = ord(letter) - ord("a")
            if index < len(keywords) and keywords[index]:
                flags.add(keywords[index])
    return frozenset(flags)


def info_suffix(flags: Collection[str], keywords: list[str], kept: str = "") -> str:
    """``:2,`` and the letters for ``flags`` (keywords must be in ``keywords``);
    ``kept``: letters of the old suffix this store does not interpret (``P``)."""
    letters = set(kept)
    for flag in flags:
        if flag in _FLAG_LETTERS:
            letters.add(_FLAG_LETTERS[flag])
        else:
            letters.add(chr(ord("a") + keywords.index(flag)))
    return INFO + "".join(sorted(letters))


def _uninterpreted(name: str) -> str:
    _, _, info = name.partition(INFO)
    return "".join(c for c in info if c.isupper() and c not in _LETTERS)


def _base(name: str) -> str:
    return name.partition(":")[0]


@dataclass(frozen=True, slots=True)
class Entry:
    uid: int
    name: str  # the file's name in cur/
    info: MessageInfo


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A folder as one sync saw it: messages in UID order."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    entries: tuple[Entry, ...]
    keywords: tuple[str, ...]

    def status(self) -> FolderStatus:
        infos = [entry.info for entry in self.entries]
        return FolderStatus(
            uidvalidity=self.uidvalidity,
            uidnext=self.uidnext,
            highestmodseq=self.highestmodseq,
            messages=len(infos),
            unseen=sum(1 for info in infos if SEEN not in info.flags),
            size=sum(info.size for info in infos),
            deleted=sum(1 for info in infos if DELETED in info.flags),
        )

    def by_uid(self) -> dict[int, Entry]:
        return {entry.uid: entry for entry in self.entries}


_Stamp = tuple[int, int, int, int]
# File times advance in clock ticks (a few milliseconds), so a change within the tick of
# a look leaves the times as they were: a look that recent is not reused.
_TICK_NS: Final = 50_000_000


def change_stamp(folder: Path) -> _Stamp:
    """What changes when a folder does: the mtimes of ``new/``, ``cur/`` and its list,
    and the list's inode (every write of it is a new file renamed into place)."""

    def stat(path: Path) -> tuple[int, int]:
        try:
            found = path.stat()
        except FileNotFoundError:
            return 0, 0
        return found.st_mtime_ns, found.st_ino

    uidlist = stat(folder / UIDLIST_FILE)
    return (stat(folder / "new")[0], stat(folder / "cur")[0], *uidlist)


def _settled(stamp: _Stamp) -> bool:
    """Whether every time in ``stamp`` is older than a tick: a look then can be reused."""
    return max(stamp[:3]) < time.time_ns() - _TICK_NS


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    method: Callable[Concatenate[FolderFiles, _P], _R],
) -> Callable[Concatenate[FolderFiles, _P], _R]:
    def guarded(self: FolderFiles, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self.guard:
            return method(self, *args, **kwargs)

    return guarded


class FolderFiles:
    """The files of one folder directory (one with ``tmp``, ``new`` and ``cur``)."""

    def __init__(self, path: Path, *, now: Callable[[], float]) -> None:
        self.path = path
        self._now = now
        self._stamp: _Stamp | None = None
        self._snapshot: Snapshot | None = None
        self._mtimes: dict[str, float] = {}  # file name -> mtime, for INTERNALDATE
        # Sessions of one process share this object from worker threads; the dot-lock
        # keeps processes apart, this keeps threads from interleaving a sync.
        self.guard = threading.RLock()
        self._usage: tuple[_Stamp, int] | None = None

    # -- reading -------------------------------------------------------------------
    def _stamp_now(self) -> _Stamp:
        return change_stamp(self.path)

    @_guarded
    def snapshot(self) -> Snapshot:
        """The folder now, synced (see the module's docstring)."""
        stamp = self._stamp_now()
        if self._snapshot is not None and stamp == self._stamp:
            return self._snapshot
        files = self._list_files()
        uidlist = read_uidlist(self.path / UIDLIST_FILE)
        if uidlist is None or self._needs_sync(uidlist, files):
            with uidlist_lock(self.path) as lock:
                files = self._list_files()
                uidlist = self._reconcile(files)
                lock.commit(uidlist)
            stamp = self._stamp_now()
        return self._remember(stamp, uidlist, self._list_files())

    def _list_files(self) -> dict[str, tuple[str, str]]:
        """base name -> (subfolder, file name), ``new/`` and ``cur/``."""
        files: dict[str, tuple[str, str]] = {}
        for sub in ("new", "cur"):
            with contextlib.suppress(FileNotFoundError), os.scandir(self.path / sub) as it:
                for entry in it:
                    if not entry.name.startswith("."):
                        files[_base(entry.name)] = (sub, entry.name)
        return files

    def _needs_sync(self, uidlist: UidList, files: dict[str, tuple[str, str]]) -> bool:
        if any(sub == "new" for sub, _ in files.values()):
            return True
        if len(files) != len(uidlist.records):
            return True
        return any(r.base not in files or r.size is None for r in uidlist.records)

    def _reconcile(self, files: dict[str, tuple[str, str]]) -> UidList:
        """Under the lock: new/ into cur/, UIDs for new base names, gone ones dropped."""
        old = read_uidlist(self.path / UIDLIST_FILE)
        uidlist = old or UidList(uidvalidity=self._new_uidvalidity())
        if old is None:
            uidlist.uidnext = 1
        kept = [r for r in uidlist.records if r.base in files]
        if len(kept) != len(uidlist.records):
            uidlist.highestmodseq += 1  # an expunge is a change (RFC 7162 3.2.10)
        known = {r.base for r in kept}
        new = sorted((b for b in files if b not in known), key=lambda b: self._arrival(b, files[b]))
        for base in new:
            uidlist.highestmodseq += 1
            kept.append(Record(uid=uidlist.uidnext, base=base, modseq=uidlist.highestmodseq))
            uidlist.uidnext += 1
        for base, (sub, name) in list(files.items()):
            if sub == "new":
                target = name if INFO in name else base + INFO
                try:
                    os.rename(self.path / "new" / name, self.path / "cur" / target)
                except FileNotFoundError:
                    continue  # another process moved it; the next sync sees it in cur/
                files[base] = ("cur", target)
        for record in kept:
            if record.size is None:
                record.size = self._size_of(files[record.base][1], files[record.base][0])
        uidlist.records = kept
        return uidlist

    def _arrival(self, base: str, found: tuple[str, str]) -> tuple[int, str]:
        """Delivery order: the file's mtime (a rename keeps it), then its name."""
        try:
            return (self.path.joinpath(*found).stat().st_mtime_ns, base)
        except FileNotFoundError:
            return (0, base)

    def _size_of(self, name: str, sub: str) -> int | None:
        size = _name_size(name)
        if size is not None:
            return size
        try:
            with open(self.path / sub / name, "rb") as file:
                return crlf_size(file)
        except FileNotFoundError:
            return None

    def _new_uidvalidity(self) -> int:
        return max(1, int(self._now()))  # seconds, as Dovecot chooses it

    def _remember(
        self, stamp: _Stamp, uidlist: UidList, files: dict[str, tuple[str, str]]
    ) -> Snapshot:
        keywords = read_keywords(self.path / KEYWORDS_FILE)
        mtimes: dict[str, float] = {}
        entries: list[Entry] = []
        for record in uidlist.records:
            found = files.get(record.base)
            if found is None or found[0] != "cur":
                continue  # vanished since the sync; the next one drops its record
            name = found[1]
            mtime = self._mtimes.get(name)
            if mtime is None:
                try:
                    mtime = (self.path / "cur" / name).stat().st_mtime
                except FileNotFoundError:
                    continue
            mtimes[name] = mtime
            info = MessageInfo(
                uid=record.uid,
                flags=flags_of(name, keywords),
                internal_date=mtime,
                size=record.size or 0,
                modseq=record.modseq,
            )
            entries.append(Entry(record.uid, name, info))
        self._mtimes = mtimes
        self._stamp = stamp if _settled(stamp) else None
        self._snapshot = Snapshot(
            uidvalidity=uidlist.uidvalidity,
            uidnext=uidlist.uidnext,
            highestmodseq=uidlist.highestmodseq,
            entries=tuple(entries),
            keywords=tuple(keywords),
        )
        return self._snapshot

    def usage(self) -> int:
        """Octets the folder's messages take, without a sync (no lock, nothing moved):
        sizes from the names (``W=``), else the files' sizes. Cached like a snapshot."""
        stamp = self._stamp_now()
        cached = self._usage
        if cached is not None and cached[0] == stamp:
            return cached[1]
        total = 0
        for sub, name in self._list_files().values():
            size = _name_size(name)
            if size is None:
                with contextlib.suppress(FileNotFoundError):
                    size = (self.path / sub / name).stat().st_size
            total += size or 0
        self._usage = (stamp, total) if _settled(stamp) else None
        return total

    def message_path(self, uid: int) -> Path | None:
        entry = self.snapshot().by_uid().get(uid)
        return self.path / "cur" / entry.name if entry is not None else None

    # -- changing ------------------------------------------------------------------
    @_guarded
    def add_file(self, make: Callable[[Path], str], flags: Collection[str]) -> int:
        """Put a new message in ``cur/`` with ``flags``; return its UID. ``make(tmp)``
        writes it durably into ``tmp/`` and returns its name there."""
        with uidlist_lock(self.path) as lock:
            keywords = self._keywords_for(flags)
            name = make(self.path / "tmp")
            target = name + info_suffix(flags, keywords)
            try:
                os.rename(self.path / "tmp" / name, self.path / "cur" / target)
            except BaseException:
                (self.path / "tmp" / name).unlink(missing_ok=True)
                raise
            uidlist = self._reconcile(self._list_files())
            lock.commit(uidlist)
        uid = next(r.uid for r in uidlist.records if r.base == name)
        self._snapshot = None
        return uid

    @_guarded
    def change_flags(
        self,
        uids: Iterable[int],
        flags: Collection[str],
        how: FlagChange,
        unchanged_since: int | None,
    ) -> tuple[list[MessageInfo], list[int]]:
        changed: list[int] = []
        failed: list[int] = []
        with uidlist_lock(self.path) as lock:
            uidlist = self._reconcile(self._list_files())
            keywords = self._keywords_for(flags if how is not FlagChange.REMOVE else ())
            files = self._list_files()
            records = {r.uid: r for r in uidlist.records}
            for uid in sorted(set(uids)):
                record = records.get(uid)
                if record is None or record.base not in files:
                    continue
                if unchanged_since is not None and record.modseq > unchanged_since:
                    failed.append(uid)
                    continue
                name = files[record.base][1]
                old = flags_of(name, keywords)
                if how is FlagChange.REPLACE:
                    new = frozenset(flags)
                elif how is FlagChange.ADD:
                    new = old | frozenset(flags)
                else:
                    new = old - frozenset(flags)
                if new == old:
                    continue
                target = record.base + info_suffix(new, keywords, _uninterpreted(name))
                os.rename(self.path / "cur" / name, self.path / "cur" / target)
                uidlist.highestmodseq += 1
                record.modseq = uidlist.highestmodseq
                changed.append(uid)
            lock.commit(uidlist)
        self._snapshot = None
        by_uid = self.snapshot().by_uid()
        return [by_uid[uid].info for uid in changed if uid in by_uid], failed

    @_guarded
    def remove(self, uids: Collection[int], *, only_deleted: bool) -> list[int]:
        """Expunge: remove the files of ``uids`` (those flagged \\Deleted only, with
        ``only_deleted``); return the UIDs removed, ascending."""
        removed: list[int] = []
        with uidlist_lock(self.path) as lock:
            files = self._list_files()
            uidlist = self._reconcile(files)
            keep: list[Record] = []
            for record in uidlist.records:
                name = files.get(record.base, ("", ""))[1]
                wanted = record.uid in uids
                if wanted and only_deleted:
                    wanted = DELETED in flags_of(name, [])
                if wanted and name:
                    with contextlib.suppress(FileNotFoundError):
                        (self.path / "cur" / name).unlink()
                    removed.append(record.uid)
                else:
                    keep.append(record)
            if removed:
                uidlist.highestmodseq += 1
            uidlist.records = keep
            lock.commit(uidlist)
        self._snapshot = None
        return removed

    def _keywords_for(self, flags: Iterable[str]) -> list[str]:
        """The folder's keyword list with every keyword in ``flags`` (added, under the
        lock, to ``dovecot-keywords``)."""
        keywords = read_keywords(self.path / KEYWORDS_FILE)
        wanted = [f for f in flags if f not in SYSTEM_FLAGS and f not in keywords]
        if not wanted:
            return keywords
        for keyword in dict.fromkeys(wanted):
            if "" in keywords:
                keywords[keywords.index("")] = keyword
            elif len(keywords) < 26:
                keywords.append(keyword)
            else:
                raise TooManyKeywords(f"a folder holds at most 26 keywords; {keyword!r} is more")
        write_keywords(self.path / KEYWORDS_FILE, keywords)
        return keywords


def _name_size(name: str) -> int | None:
    """The ``W=`` (size with CRLF line endings) a Maildir file name carries, if any."""
    for part in name.partition(":")[0].split(","):
        if part.startswith("W=") and part[2:].isdigit():
            return int(part[2:])
    return None
