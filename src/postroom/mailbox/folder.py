"""One Maildir folder: its messages with UIDs and flags, kept in step with its files.

Blocking file work, run in worker threads by ``mailbox.account``. A message is a file
in ``new/`` (delivered, not yet looked at by a mail client) or in ``cur/``, named
``<base>:2,<letters>`` there: upper-case letters are the system flags (``D`` \\Draft,
``F`` \\Flagged, ``R`` \\Answered, ``S`` \\Seen, ``T`` \\Deleted, in ASCII order, as
the Maildir spec and Dovecot and mutt write them; others such as ``P`` are kept as
found), lower-case letters the folder's keywords (``dovecot-keywords``).

UIDs are in ``dovecot-uidlist`` (``uidlist``). A delivery does not number its message
(as Postfix's virtual(8) and maildrop do not): taking the folder's dot-lock creates and
removes a file, which on ext4 costs about as much CPU as the delivery's own file, and
deliveries come many a second. The next look numbers everything delivered since, with
one lock and one append. A *sync* numbers what a delivery or another tool left:
every base name not in the list gets the next UID, in the order of the times their names
begin with (the Maildir convention: no file is opened or stat'ed for it), appended to the
list in one write; records whose file is gone are dropped (a rewrite of the list). It
holds the folder's lock (``uidlist.uidlist_lock``); a look that finds nothing to number
takes no lock and writes nothing. A message stays in ``new/`` until its flags first
change, which moves it to ``cur/`` (as mutt does; Dovecot moves them on its first look;
either is the Maildir protocol).

What a look saw is kept and reused: each of ``new/`` and ``cur/`` is listed again only
when its mtime moves, and the list is read again only from where the last read stopped
when it only grew. A new look is built from the last one plus what was added when that
is all that changed (a delivery), and each look has a version with the changes from the
looks before it (``changes``), so a session watching a 100,000-message folder learns of a
new message without the folder being compared message by message.

A directory listed within a clock tick of its last change may change again within the
same tick without its mtime moving, so such a listing is taken again on the next look;
a large one (``LARGE`` names or more, a listing that costs tens of milliseconds) is
reused for the rest of that tick first, so the looks of many sessions woken together
share it: a change made by another process within the tick of the folder's last change
shows up to a tick (50 ms) late.

INTERNALDATE is the time a message's file name begins with (``<seconds>.M<µs>``, as
postroom, Dovecot, mutt and Python name them; an APPEND with a date names its file with
that date and sets its mtime too, as Dovecot does); a name without one falls back to the
file's mtime.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import itertools
import operator
import os
import re
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
    FolderChanges,
    FolderStatus,
    MessageInfo,
    TooManyKeywords,
)
from postroom.mailbox.message import crlf_size
from postroom.mailbox.uidlist import (
    KEYWORDS_FILE,
    UIDLIST_FILE,
    LoadedList,
    Record,
    UidList,
    UidListLock,
    load_uidlist,
    read_keywords,
    uidlist_lock,
    write_keywords,
)

__all__ = ["INFO", "LARGE", "FolderFiles", "Snapshot", "flags_of", "info_suffix", "name_time"]

INFO: Final = ":2,"
LARGE: Final = 1000  # names in a directory listing worth sharing for a tick
_HISTORY: Final = 256  # looks whose changes are kept, per folder
_LETTERS: Final = {"D": DRAFT, "F": FLAGGED, "R": ANSWERED, "S": SEEN, "T": DELETED}
_FLAG_LETTERS: Final = {flag: letter for letter, flag in _LETTERS.items()}
_NAME_TIME: Final = re.compile(r"(\d+)\.(?:M(\d{1,6})(?!\d))?")
_W_SIZE: Final = re.compile(r",W=(\d+)(?=[,:]|$)")
# File times advance in clock ticks (a few milliseconds), so a change within the tick of
# a listing leaves the directory's mtime as it was: a listing that recent is taken again.
_TICK_NS: Final = 50_000_000
_VERSIONS = itertools.count(1)  # process-wide: a version names one look at one folder


def flags_of(name: str, keywords: list[str] | tuple[str, ...]) -> frozenset[str]:
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


def name_time(name: str) -> float | None:
    """The time a Maildir file name begins with (``<seconds>.M<µs>...``), if any."""
    found = _NAME_TIME.match(name)
    if found is None:
        return None
    micros = found.group(2)
    return int(found.group(1)) + (int(micros) / 1_000_000 if micros else 0.0)


def _info_uid(info: MessageInfo) -> int:
    return info.uid


@dataclass(slots=True, eq=False)
class _Listing:
    """``new/`` or ``cur/`` as listed: base name -> file name."""

    names: dict[str, str]
    mtime: int  # the directory's, before the listing
    listed_at: int  # time.time_ns() before the listing
    trusted: bool  # listed a tick after its mtime: no change can hide behind it

    def reusable(self, mtime: int, now: int) -> bool:
        if mtime != self.mtime:
            return False
        return self.trusted or (len(self.names) >= LARGE and now < self.listed_at + _TICK_NS)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A folder as one look saw it: messages in UID order, and where each one's file is
    (``new/<name>`` or ``cur/<name>``)."""

    version: int
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    infos: tuple[MessageInfo, ...]
    paths: tuple[str, ...]
    keywords: tuple[str, ...]
    status: FolderStatus
    last_record: int  # the largest UID of the list it was built from
    complete: bool  # every record of the list had its file

    def find(self, uid: int) -> int | None:
        """The position of ``uid``'s message."""
        at = bisect.bisect_left(self.infos, uid, key=_info_uid)
        return at if at < len(self.infos) and self.infos[at].uid == uid else None


def _same(old: Snapshot, new: Snapshot) -> bool:
    return (old.uidvalidity, old.uidnext, old.highestmodseq, old.keywords) == (
        new.uidvalidity,
        new.uidnext,
        new.highestmodseq,
        new.keywords,
    ) and len(old.infos) == len(new.infos)


def _counts(infos: Iterable[MessageInfo], sign: int = 1) -> tuple[int, int, int, int]:
    messages = unseen = size = deleted = 0
    for info in infos:
        messages += 1
        size += info.size
        if SEEN not in info.flags:
            unseen += 1
        if DELETED in info.flags:
            deleted += 1
    return (sign * messages, sign * unseen, sign * size, sign * deleted)


def _add(*counts: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    m, u, s, d = (sum(column) for column in zip(*counts, strict=True))
    return (m, u, s, d)


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
    """The files of one folder directory (one with ``tmp``, ``new`` and ``cur``).
    ``usage_changed(octets, messages)`` is told of every message this process adds to
    or removes from it (the account's ``maildirsize``)."""

    def __init__(
        self,
        path: Path,
        *,
        now: Callable[[], float],
        usage_changed: Callable[[int, int], None] = lambda octets, messages: None,
    ) -> None:
        self.path = path
        self._now = now
        self._usage_changed = usage_changed
        # Sessions of one process share this object from worker threads; the dot-lock
        # keeps processes apart, this keeps threads from interleaving a sync.
        self.guard = threading.RLock()
        self._listings: dict[str, _Listing] = {}
        self._loaded: LoadedList | None = None
        self._snapshot: Snapshot | None = None
        self._built_from: tuple[object, ...] = ()  # what the snapshot was built from
        self._only_grown = False  # since the snapshot: records appended, cur/ as it was
        self._history: collections.deque[FolderChanges] = collections.deque(maxlen=_HISTORY)
        self._keywords: tuple[str, ...] = ()
        self._flag_sets: dict[str, frozenset[str]] = {}  # file name's info -> flags
        self._mtimes: dict[str, float] = {}  # names without a time -> the file's mtime
        self._dates: dict[str, float] = {}  # base name -> its time, parsed by a sync

    # -- what is on disk -----------------------------------------------------------
    def _listing(self, sub: str, *, force: bool = False) -> _Listing:
        directory = self.path / sub
        now = time.time_ns()
        try:
            mtime = os.stat(directory).st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        listing = self._listings.get(sub)
        if listing is not None and not force and listing.reusable(mtime, now):
            return listing
        names: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError), os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if name[:1] != ".":
                    names[name.partition(":")[0]] = name
        trusted = now - mtime >= _TICK_NS
        if listing is not None and names == listing.names:
            # as it was: the same object, so a look built from it is still the look
            listing.mtime, listing.listed_at, listing.trusted = mtime, now, trusted
            return listing
        listing = _Listing(names, mtime, now, trusted)
        self._listings[sub] = listing
        if sub == "cur":
            self._only_grown = False
        return listing

    def _adopt(self, sub: str, added: dict[str, str], removed: Iterable[str] = ()) -> None:
        """This process changed ``sub/``: the listing says so without a new one."""
        listing = self._listings.get(sub)
        if listing is None:
            return
        names = dict(listing.names)
        for base in removed:
            names.pop(base, None)
        names.update(added)
        try:
            mtime = os.stat(self.path / sub).st_mtime_ns
        except FileNotFoundError:
            mtime = 0
        self._listings[sub] = _Listing(names, mtime, time.time_ns(), trusted=False)
        if sub == "cur":
            self._only_grown = False

    def _load(self) -> LoadedList | None:
        before = self._loaded
        loaded = load_uidlist(self.path / UIDLIST_FILE, before)
        if loaded is not before and (
            loaded is None or before is None or loaded.inode != before.inode
        ):
            self._only_grown = False
        self._loaded = loaded
        return loaded

    def _locate(self, base: str) -> tuple[str, str] | None:
        """``(subfolder, file name)`` of ``base`` in the listings."""
        name = self._listings["cur"].names.get(base)
        if name is not None:
            return "cur", name
        name = self._listings["new"].names.get(base)
        return ("new", name) if name is not None else None

    # -- reading -------------------------------------------------------------------
    @_guarded
    def snapshot(self) -> Snapshot:
        """The folder now, synced (see the module's docstring)."""
        new, cur, loaded = self._listing("new"), self._listing("cur"), self._load()
        now = (new, cur, loaded)
        if self._snapshot is not None and all(map(operator.is_, self._built_from, now)):
            return self._snapshot
        if loaded is None or self._needs_sync(loaded, new, cur):
            with uidlist_lock(self.path) as lock:
                self._sync(lock)
        return self._build()

    @_guarded
    def changes(self, since: int) -> FolderChanges | None:
        """What changed since the look with version ``since`` (see ``MailAccount``)."""
        return self._changes(self.snapshot(), since)

    def changes_seen(self, since: int, looked: int) -> FolderChanges | None:
        """``changes`` from the last look, without looking again, if that look is
        ``looked`` or a later one (a watch reported it); None when it is not, or another
        thread is looking just now. No file is touched: for the event loop's thread."""
        if not self.guard.acquire(blocking=False):
            return None
        try:
            now = self._snapshot
            if now is None or now.version < looked:
                return None
            return self._changes(now, since)
        finally:
            self.guard.release()

    def _changes(self, now: Snapshot, since: int) -> FolderChanges | None:
        if since == now.version:
            return FolderChanges(now.version, (), (), (), now.infos)
        history = list(self._history)
        start = next((i for i, step in enumerate(history) if step.version == since), None)
        if start is None:
            return None
        expunged: set[int] = set()
        changed: dict[int, MessageInfo] = {}
        added: dict[int, MessageInfo] = {}
        for step in history[start + 1 :]:
            for uid in step.expunged:
                if added.pop(uid, None) is None:
                    changed.pop(uid, None)
                    expunged.add(uid)
            for info in step.changed:
                (added if info.uid in added else changed)[info.uid] = info
            for info in step.added:
                added[info.uid] = info
        return FolderChanges(
            now.version,
            tuple(sorted(expunged)),
            tuple(changed[uid] for uid in sorted(changed)),
            tuple(added[uid] for uid in sorted(added)),
            now.infos,
        )

    def _needs_sync(self, loaded: LoadedList, new: _Listing, cur: _Listing) -> bool:
        index = loaded.index
        if any(base not in index for base in new.names):
            return True
        if self._only_grown and self._snapshot is not None:
            # cur/ and the older records are as the last look saw them: only the new ones,
            # and new/'s messages (another tool may have removed one from there)
            before = self._built_from[0]
            assert isinstance(before, _Listing)
            if any(b not in new.names and b not in cur.names for b in before.names):
                return True
            last = self._snapshot.last_record
            records = loaded.uidlist.records
            tail = records[bisect.bisect_right(records, last, key=_record_uid) :]
            return any(r.size is None or self._missing(r.base) for r in tail)
        if len(cur.names) + len(new.names) != len(index):
            return True
        if any(base not in index for base in cur.names):
            return True
        return any(r.size is None for r in loaded.uidlist.records)

    def _missing(self, base: str) -> bool:
        return self._locate(base) is None

    def _sync(self, lock: UidListLock) -> None:
        """Under the lock: number what is new and drop what is gone."""
        new = self._listing("new", force=True)
        cur = self._listing("cur")
        loaded = self._load()
        uidlist = loaded.uidlist if loaded is not None else None
        records = uidlist.records if uidlist is not None else []
        missing = [r for r in records if r.base not in cur.names and r.base not in new.names]
        if missing and not cur.trusted:
            cur = self._listing("cur", force=True)  # a stale listing is not a reason to drop
            missing = [r for r in records if r.base not in cur.names and r.base not in new.names]
        index = loaded.index if loaded is not None else {}
        if uidlist is None:
            uidlist = UidList(uidvalidity=max(1, int(self._now())), uidnext=1)
        fresh = self._number(
            uidlist, (base for base in itertools.chain(new.names, cur.names) if base not in index)
        )
        unsized = [r for r in records if r.size is None and r not in missing]
        if loaded is not None and not missing and not unsized and self._appendable(loaded):
            if fresh:
                self._loaded = loaded.extended(fresh, lock.append(fresh))
        else:
            for record in unsized:
                found = self._locate(record.base)
                if found is not None:
                    record.size = self._size_of(*found)
            gone = {id(r) for r in missing}
            kept = [r for r in records if id(r) not in gone]
            if missing:
                uidlist.highestmodseq += 1  # an expunge is a change (RFC 7162 3.2.10)
            uidlist.records = kept + fresh
            self._commit(lock, uidlist)

    def _number(self, uidlist: UidList, bases: Iterable[str]) -> list[Record]:
        """Records for ``bases`` in the order of their names' times, the next UIDs."""
        fresh: list[Record] = []
        for date, base in sorted((name_time(base) or 0.0, base) for base in bases):
            uidlist.highestmodseq += 1
            size = _name_size(base)
            if size is None:
                size = self._size_of(*(self._locate(base) or ("new", base)))
            fresh.append(Record(uidlist.uidnext, base, size, uidlist.highestmodseq))
            uidlist.uidnext += 1
            if date:
                self._dates[base] = date  # for the look that follows: no second parse
        return fresh

    def _appendable(self, loaded: LoadedList) -> bool:
        """Whether the list on disk is ``loaded`` whole (no line cut short after it)."""
        try:
            found = os.stat(self.path / UIDLIST_FILE)
        except FileNotFoundError:
            return False
        return found.st_ino == loaded.inode and found.st_size == loaded.length

    def _commit(self, lock: UidListLock, uidlist: UidList) -> None:
        try:
            lock.commit(uidlist)
        except BaseException:
            self._loaded = None  # records may have been changed in place: read it again
            raise
        found = os.stat(self.path / UIDLIST_FILE)
        index = {record.base: record.uid for record in uidlist.records}
        self._loaded = LoadedList(uidlist, found.st_ino, found.st_size, index)
        self._only_grown = False

    def _size_of(self, sub: str, name: str) -> int | None:
        size = _name_size(name)
        if size is not None:
            return size
        try:
            with open(self.path / sub / name, "rb") as file:
                return crlf_size(file)
        except FileNotFoundError:
            return None

    def _build(self) -> Snapshot:
        """The look at what the listings and the list say now, with its changes."""
        new, cur, loaded = self._listings["new"], self._listings["cur"], self._loaded
        assert loaded is not None
        uidlist = loaded.uidlist
        keywords = tuple(read_keywords(self.path / KEYWORDS_FILE))
        if keywords != self._keywords:
            self._keywords, self._flag_sets = keywords, {}
        old = self._snapshot
        version = next(_VERSIONS)
        if (
            old is not None
            and self._only_grown
            and old.complete
            and old.uidvalidity == uidlist.uidvalidity
            and not self._flag_sets_changed(old)
        ):
            snapshot, step = self._grown(old, version, uidlist, new)
        else:
            snapshot, step = self._rebuilt(old, version, uidlist)
        self._built_from = (new, cur, loaded)
        self._only_grown = True
        self._dates.clear()
        if old is not None and _same(old, snapshot) and not step.changed + step.added:
            # nothing a client sees has changed (a file moved from new/ to cur/, say):
            # the same version, so sessions have nothing to ask
            snapshot = dataclasses.replace(snapshot, version=old.version, status=old.status)
        else:
            if old is None or old.uidvalidity != snapshot.uidvalidity:
                self._history.clear()
            self._history.append(step)
        self._snapshot = snapshot
        return snapshot

    def _flag_sets_changed(self, old: Snapshot) -> bool:
        return old.keywords != self._keywords

    def _info(self, record: Record, sub: str, name: str) -> MessageInfo:
        _, _, info = name.partition(INFO)
        flags = self._flag_sets.get(info)
        if flags is None:
            flags = self._flag_sets[info] = flags_of(INFO + info, self._keywords)
        date = self._dates.pop(record.base, None) or name_time(name)
        if date is None:
            date = self._mtimes.get(name)
            if date is None:
                with contextlib.suppress(FileNotFoundError):
                    date = self._mtimes[name] = os.stat(self.path / sub / name).st_mtime
        return MessageInfo(record.uid, flags, date or 0.0, record.size or 0, record.modseq)

    def _grown(
        self, old: Snapshot, version: int, uidlist: UidList, new: _Listing
    ) -> tuple[Snapshot, FolderChanges]:
        """The last look plus the records appended since, and new/'s renames."""
        infos, paths = list(old.infos), list(old.paths)
        changed: list[MessageInfo] = []
        replaced: list[MessageInfo] = []
        index = self._loaded.index if self._loaded is not None else {}
        for base, name in new.names.items():
            at = old.find(index.get(base, 0))
            if at is not None and paths[at] != "new/" + name:
                paths[at] = "new/" + name
                before = infos[at]
                replaced.append(before)
                record = Record(before.uid, base, before.size, before.modseq)
                infos[at] = self._info(record, "new", name)
                changed.append(infos[at])
        records = uidlist.records
        added: list[MessageInfo] = []
        complete = True
        for record in records[bisect.bisect_right(records, old.last_record, key=_record_uid) :]:
            found = self._locate(record.base)
            if found is None:
                complete = False
                continue
            added.append(self._info(record, *found))
            infos.append(added[-1])
            paths.append(f"{found[0]}/{found[1]}")
        counts = _add(
            (old.status.messages, old.status.unseen, old.status.size, old.status.deleted),
            _counts(added),
            _counts(changed),
            _counts(replaced, -1),
        )
        snapshot = self._snapshot_of(
            version, uidlist, infos, paths, counts=counts, complete=complete
        )
        return snapshot, FolderChanges(version, (), tuple(changed), tuple(added))

    def _snapshot_of(
        self,
        version: int,
        uidlist: UidList,
        infos: list[MessageInfo],
        paths: list[str],
        *,
        counts: tuple[int, int, int, int],
        complete: bool,
    ) -> Snapshot:
        messages, unseen, size, deleted = counts
        status = FolderStatus(
            uidvalidity=uidlist.uidvalidity,
            uidnext=uidlist.uidnext,
            highestmodseq=uidlist.highestmodseq,
            messages=messages,
            unseen=unseen,
            size=size,
            deleted=deleted,
            version=version,
        )
        return Snapshot(
            version=version,
            uidvalidity=uidlist.uidvalidity,
            uidnext=uidlist.uidnext,
            highestmodseq=uidlist.highestmodseq,
            infos=tuple(infos),
            paths=tuple(paths),
            keywords=self._keywords,
            status=status,
            last_record=uidlist.records[-1].uid if uidlist.records else 0,
            complete=complete,
        )

    def _rebuilt(
        self, old: Snapshot | None, version: int, uidlist: UidList
    ) -> tuple[Snapshot, FolderChanges]:
        """Every record looked at, the messages unchanged since ``old`` reused."""
        before: dict[int, tuple[MessageInfo, str]] = {}
        if old is not None:
            before = {i.uid: (i, path) for i, path in zip(old.infos, old.paths, strict=True)}
        largest = old.infos[-1].uid if old is not None and old.infos else 0
        cur = self._listings["cur"].names
        new = self._listings["new"].names
        infos: list[MessageInfo] = []
        paths: list[str] = []
        changed: list[MessageInfo] = []
        added: list[MessageInfo] = []
        complete = True
        for record in uidlist.records:
            sub, name = "cur", cur.get(record.base)
            if name is None:
                sub, name = "new", new.get(record.base)
                if name is None:
                    complete = False
                    continue
            path = f"{sub}/{name}"
            previous = before.pop(record.uid, None)
            if previous is not None and previous[1] == path:
                info = previous[0]
                if info.modseq != record.modseq or info.size != (record.size or 0):
                    info = self._info(record, sub, name)
                    changed.append(info)
            else:
                info = self._info(record, sub, name)
                if previous is None:
                    (added if record.uid > largest else changed).append(info)
                elif (previous[0].flags, previous[0].modseq) == (info.flags, info.modseq):
                    info = previous[0]  # moved from new/ to cur/: nothing a client sees
                else:
                    changed.append(info)
            infos.append(info)
            paths.append(path)
        snapshot = self._snapshot_of(
            version, uidlist, infos, paths, counts=_counts(infos), complete=complete
        )
        step = FolderChanges(version, tuple(sorted(before)), tuple(changed), tuple(added))
        return snapshot, step

    def usage(self) -> tuple[int, int]:
        """Octets and messages in the folder, without a sync (no lock, nothing moved):
        sizes from the names (``W=``), else the files' sizes."""
        with self.guard:
            listings = [(sub, self._listing(sub)) for sub in ("new", "cur")]
        octets = count = 0
        for sub, listing in listings:
            for name in listing.names.values():
                size = _name_size(name)
                if size is None:
                    with contextlib.suppress(FileNotFoundError):
                        size = (self.path / sub / name).stat().st_size
                octets += size or 0
                count += 1
        return octets, count

    def message_path(self, uid: int) -> Path | None:
        snapshot = self.snapshot()
        at = snapshot.find(uid)
        return self.path / snapshot.paths[at] if at is not None else None

    # -- changing ------------------------------------------------------------------
    def record_delivery(self, name: str, size: int) -> None:
        """``new/<name>`` (of ``size`` octets with CRLF line endings) was just delivered:
        the account's usage grows (``maildirsize``). Its UID is given by the next look,
        with everything else delivered since (see the module's notes)."""
        self._usage_changed(size, 1)

    @_guarded
    def add_files(
        self, makers: Iterable[tuple[Callable[[Path], str], Collection[str]]]
    ) -> list[int]:
        """Put new messages in ``cur/``, each with its flags; return their UIDs.
        ``make(tmp)`` writes one durably into ``tmp/`` and returns its name there."""
        bases: list[str] = []
        with uidlist_lock(self.path) as lock:
            self._listing("cur")
            placed: dict[str, str] = {}
            try:
                for make, flags in makers:
                    keywords = self._keywords_for(flags)
                    name = make(self.path / "tmp")
                    target = name + info_suffix(flags, keywords)
                    try:
                        os.rename(self.path / "tmp" / name, self.path / "cur" / target)
                    except BaseException:
                        (self.path / "tmp" / name).unlink(missing_ok=True)
                        raise
                    placed[name] = target
                    bases.append(name)
            finally:
                self._adopt("cur", placed)
                self._sync(lock)
        assert self._loaded is not None
        index = self._loaded.index
        uids = [index[base] for base in bases]
        octets = sum(_name_size(base) or 0 for base in bases)
        self._usage_changed(octets, len(bases))
        return uids

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
            loaded = self._synced(lock)
            uidlist = loaded.uidlist
            keywords = self._keywords_for(flags if how is not FlagChange.REMOVE else ())
            moved: dict[str, dict[str, str]] = {"new": {}, "cur": {}}
            renamed: dict[str, str] = {}
            for uid in sorted(set(uids)):
                at = loaded.find(uid)
                record = uidlist.records[at] if at is not None else None
                found = self._locate(record.base) if record is not None else None
                if record is None or found is None:
                    continue
                if unchanged_since is not None and record.modseq > unchanged_since:
                    failed.append(uid)
                    continue
                sub, name = found
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
                os.rename(self.path / sub / name, self.path / "cur" / target)
                moved[sub][record.base] = name
                renamed[record.base] = target
                uidlist.highestmodseq += 1
                record.modseq = uidlist.highestmodseq
                changed.append(uid)
            if changed:
                self._adopt("new", {}, moved["new"])
                self._adopt("cur", renamed)
                self._commit(lock, uidlist)
        snapshot = self.snapshot()
        positions = [snapshot.find(uid) for uid in changed]
        return [snapshot.infos[at] for at in positions if at is not None], failed

    def _synced(self, lock: UidListLock) -> LoadedList:
        """Under the lock: the list with everything on disk numbered."""
        self._sync(lock)
        assert self._loaded is not None
        return self._loaded

    @_guarded
    def remove(self, uids: Collection[int], *, only_deleted: bool) -> list[int]:
        """Expunge: remove the files of ``uids`` (those flagged \\Deleted only, with
        ``only_deleted``); return the UIDs removed, ascending."""
        removed: list[int] = []
        gone: dict[str, list[str]] = {"new": [], "cur": []}
        octets = 0
        with uidlist_lock(self.path) as lock:
            uidlist = self._synced(lock).uidlist
            keep: list[Record] = []
            for record in uidlist.records:
                found = self._locate(record.base) if record.uid in uids else None
                if found is not None and only_deleted:
                    found = found if DELETED in flags_of(found[1], []) else None
                if found is None:
                    keep.append(record)
                    continue
                with contextlib.suppress(FileNotFoundError):
                    (self.path / found[0] / found[1]).unlink()
                gone[found[0]].append(record.base)
                removed.append(record.uid)
                octets += record.size or 0
            if removed:
                uidlist.highestmodseq += 1
                uidlist.records = keep
                for sub, bases in gone.items():
                    self._adopt(sub, {}, bases)
                self._commit(lock, uidlist)
        if removed:
            self._usage_changed(-octets, -len(removed))
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


def _record_uid(record: Record) -> int:
    return record.uid


def _name_size(name: str) -> int | None:
    """The ``W=`` (size with CRLF line endings) a Maildir file name carries, if any."""
    found = _W_SIZE.search(name)
    return int(found.group(1)) if found is not None else None
