"""Maildir delivery, in the layout Postfix, Dovecot and Courier share.

``<root>/<domain>/<user>/Maildir/{tmp,new,cur}``, folders mode 0700, files mode 0600.
``root`` is ``<data_dir>/mail``; ``domain`` is in A-labels and ``user`` is the lowercased
local part, so a user's folder is named like the directory's lookup key.

One delivery (the Maildir protocol, https://cr.yp.to/proto/maildir.html):

1. create ``tmp/<unique>`` exclusively (``O_EXCL``: a clash is retried, never overwritten);
2. write ``Return-Path:`` and ``Delivered-To:`` (as Postfix local(8) does), then the message;
3. fsync the file, rename it into ``new/``, fsync ``new/``: only then is it durable.

A failure at any step removes the ``tmp/`` file, so readers (who only look in ``new/`` and
``cur/``) never see a partial message and nothing is left behind in ``tmp/``.

A user's first delivery makes the ``Maildir`` folder whole before it appears: ``tmp``,
``new`` and ``cur`` are made in a hidden sibling (``.Maildir.<random>``), which is then
renamed into place. A reader lists ``new/`` and ``cur/`` as soon as ``Maildir`` exists
(Python's ``mailbox`` fails on a folder that lacks either). A crash before the rename
leaves only that hidden sibling, holding empty folders, behind.

Files use LF line endings, the Maildir convention; stored messages are CRLF. The unique
name is ``<seconds>.M<microseconds>P<pid>Q<counter>R<random>.<host>,S=<size>,W=<vsize>``
(the random part, drawn once per ``Maildir`` object, keeps two processes or two objects
with one pid and one clock reading apart, as the spec's ``R`` field allows; the counter
keeps one object's names apart). ``S`` is the file's size and
``W`` its size with CRLF line endings (the RFC 5322 size, Dovecot's convention), so
POP3/IMAP can report sizes without reading the file. In the host name
``/``, ``:`` and ``,`` are written as ``\\057``, ``\\072`` and ``\\054``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import platform
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from postroom.clock import Clock, SystemClock
from postroom.mail.address import parse_address, path_name_problem
from postroom.mail.headers import safe_header_value
from postroom.mailbox.account import MaildirAccount
from postroom.mailbox.folder import FolderFiles
from postroom.mailbox.groupsync import GroupSync, fsync_dir
from postroom.mailbox.message import to_crlf
from postroom.mailbox.quota import QUOTA_FILE, add_usage
from postroom.mailbox.watch import Watchers

__all__ = ["Maildir", "check_folder_name", "mailbox_key"]

_log = logging.getLogger("postroom.mailbox")

SUBFOLDERS: Final = ("tmp", "new", "cur")
_FOLDER_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_NAME_MAX: Final = 255  # octets in one path component (POSIX NAME_MAX on common filesystems)
_CREATE_TRIES: Final = 20
_HOST_ESCAPES: Final = str.maketrans({"/": r"\057", ":": r"\072", ",": r"\054"})
# A message this small is written on the event loop's thread (into the page cache: a few
# microseconds); a larger one in a worker thread, so the loop never waits on a big write.
_WRITE_HERE: Final = 64 * 1024
_BOXES_KEPT: Final = 4096  # mailboxes whose folders a Maildir remembers (then starts over)


def check_folder_name(name: str) -> str:
    """Return ``name`` if it can name a folder under the root without escaping it.

    Raises ``ValueError`` for an empty name, a name starting with ``.`` (hidden, ``.``,
    ``..``), or one holding ``/``, ``\\``, NUL or other control characters.
    """
    if problem := path_name_problem(name):
        raise ValueError(f"{name!r} cannot name a mailbox folder: {problem}")
    if len(name.encode("utf-8")) > _NAME_MAX:  # lone surrogates raise UnicodeEncodeError
        raise ValueError(f"{name!r} is too long for a mailbox folder")
    return name


def mailbox_key(address: str) -> tuple[str, str]:
    """``(domain, user)`` naming the mailbox of ``address`` (the directory's lookup key:
    A-label domain, lowercased local part); ``ValueError`` when it cannot name one."""
    parsed = parse_address(address)  # AddressError is a ValueError
    return check_folder_name(parsed.ascii_domain), check_folder_name(parsed.local.lower())


def _write(fd: int, content: bytes) -> None:
    """All of ``content`` to ``fd``: a bare ``os.write`` loop, where a file object adds
    an fstat, an ioctl and an lseek (in a worker thread each a hand-over of the GIL)."""
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]


def _write_all(fd: int, path: str, content: bytes) -> None:
    """``_write`` to the new file ``fd`` at ``path``; on failure close and remove it."""
    try:
        _write(fd, content)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def _write_durably(fd: int, content: bytes) -> None:
    """Write ``content`` to the new file ``fd``, fsync and close it."""
    try:
        _write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class _Box:
    """One mailbox as deliveries use it, its folders found whole (paths as strings: a
    delivery then joins one name, where ``Path`` parsing cost more than the rename)."""

    path: Path
    tmp: str
    new: str
    account: MaildirAccount
    files: FolderFiles


def _file_content(data: bytes, *, sender: str, recipient: str) -> tuple[bytes, int]:
    """The file's bytes (LF line endings) and the message's size with CRLF line endings."""
    trace = (
        f"Return-Path: <{safe_header_value(sender)}>\r\n"
        f"Delivered-To: {safe_header_value(recipient)}\r\n"
    ).encode()
    message = trace + data
    return message.replace(b"\r\n", b"\n"), len(message)


class Maildir:
    """Maildir delivery under ``root``; implements ``MailboxStore``."""

    def __init__(
        self,
        root: Path,
        *,
        clock: Clock | None = None,
        hostname: str | None = None,
        poll_interval: float = 1.0,
        default_quota: int = 0,
    ) -> None:
        """``poll_interval``: how often a watched folder is checked for changes made
        by other processes (``watch.py``); ``default_quota``: octets an account may
        hold unless it has its own limit (0: none)."""
        self.root = root
        self._clock = clock or SystemClock()
        self._host = (hostname or platform.node() or "localhost").translate(_HOST_ESCAPES)
        self._counter = itertools.count(1)
        self._random = secrets.token_hex(4)
        self._lock = threading.Lock()  # deliveries run on the loop and in worker threads
        self._group_sync = GroupSync()  # deliveries at the same moment share new/'s fsync
        self._folders: dict[Path, FolderFiles] = {}
        self._boxes: dict[tuple[str, str], _Box] = {}  # mailboxes delivered to, found whole
        self.watchers = Watchers(self._look, interval=poll_interval)
        self.default_quota = default_quota

    # -- accounts ------------------------------------------------------------------
    def account(self, domain: str, user: str) -> MaildirAccount:
        """``user@domain``'s folders (nothing is made until first used)."""
        return MaildirAccount(self, domain, user)

    async def accounts(self) -> list[tuple[str, str]]:
        """Every ``(domain, user)`` with a Maildir, sorted."""

        def scan() -> list[tuple[str, str]]:
            found: list[tuple[str, str]] = []
            if not self.root.is_dir():
                return found
            for domain in sorted(os.listdir(self.root)):
                if domain.startswith(".") or not (self.root / domain).is_dir():
                    continue
                for user in sorted(os.listdir(self.root / domain)):
                    if (self.root / domain / user / "Maildir").is_dir():
                        found.append((domain, user))
            return found

        return await asyncio.to_thread(scan)

    def folder_files(self, path: Path) -> FolderFiles:
        """The one ``FolderFiles`` of this process for the folder at ``path``."""
        with self._lock:
            files = self._folders.get(path)
            if files is None:
                # INBOX is the Maildir; a Maildir++ folder (".Sent") is inside it
                account = path.parent if path.name.startswith(".") else path
                quota_file = f"{account}/{QUOTA_FILE}"
                files = self._folders[path] = FolderFiles(
                    path,
                    now=self._clock.time,
                    usage_changed=lambda octets, messages: add_usage(quota_file, octets, messages),
                )
            return files

    def seen_folder_files(self, path: Path) -> FolderFiles | None:
        """The ``FolderFiles`` of ``path`` if this process has one (touches no file)."""
        with self._lock:
            return self._folders.get(path)

    def _look(self, path: Path) -> int:
        """The version of a look at the folder at ``path`` now (what the watch of
        ``watch.Watchers`` compares; one look, shared by every session watching it)."""
        return self.folder_files(path).snapshot().version

    def ensure_maildir(self, maildir: Path) -> None:
        self._ensure_folders(maildir)

    def write_tmp(self, tmp_dir: Path, data: bytes, internal_date: float | None) -> str:
        """Write ``data`` (CRLF) durably as a new file in ``tmp_dir``; return its name.
        ``internal_date``: the time its name begins with and its mtime (else now)."""
        content = data.replace(b"\r\n", b"\n")
        name, fd = self._create_tmp(tmp_dir, len(content), len(to_crlf(content)), internal_date)
        try:
            _write_durably(fd, content)
            if internal_date is not None:
                os.utime(tmp_dir / name, (internal_date, internal_date))
        except BaseException:
            (tmp_dir / name).unlink(missing_ok=True)
            raise
        return name

    def link_tmp(self, source: Path, tmp_dir: Path, vsize: int, internal_date: float) -> str:
        """A new name in ``tmp_dir`` for the message file ``source`` (a hard link, as
        Dovecot copies; a copy where links are not possible), keeping its date."""
        size = source.stat().st_size
        name, fd = self._create_tmp(tmp_dir, size, vsize, internal_date)
        os.close(fd)
        target = tmp_dir / name
        try:
            target.unlink()
            try:
                os.link(source, target)
            except OSError:
                shutil.copy2(source, target)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return name

    def path(self, domain: str, user: str) -> Path:
        """The ``Maildir`` folder of ``user@domain``; ``ValueError`` for unsafe names."""
        return self.root / check_folder_name(domain) / check_folder_name(user) / "Maildir"

    async def deliver(
        self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
    ) -> str:
        """Store one message durably; return its file name in ``new/``.
        ``QuotaExceeded`` when the user's quota has no room for it.

        The file is written here when that is quick (``_begin_here``), else the whole
        delivery runs in a worker thread (a cancelled wait leaves it to finish there);
        either way ``GroupSync`` makes it durable in ``new/`` together with the files
        delivered beside it."""
        content, vsize = _file_content(data, sender=sender, recipient=recipient)
        begun = self._begin_here(domain, user, content, vsize)
        if begun is None:
            return await asyncio.to_thread(self._deliver_blocking, domain, user, content, vsize)
        box, name, fd = begun
        await self._group_sync.land(fd, *self._landing(box, name, vsize))
        return name

    def deliver_sync(
        self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
    ) -> str:
        """``deliver`` for code that is not on an event loop (it blocks)."""
        content, vsize = _file_content(data, sender=sender, recipient=recipient)
        return self._deliver_blocking(domain, user, content, vsize)

    def _deliver_blocking(self, domain: str, user: str, content: bytes, vsize: int) -> str:
        box, name, fd = self._begin(domain, user, content, vsize)
        self._group_sync.land_blocking(fd, *self._landing(box, name, vsize))
        return name

    def _begin(self, domain: str, user: str, content: bytes, vsize: int) -> tuple[_Box, str, int]:
        """Check the quota, make the mailbox whole if need be, and write ``content`` into
        a new ``tmp/`` file, not yet fsync'ed; return the mailbox, the file's name and
        its open descriptor. Blocks (a first delivery makes folders, fsync'ing each)."""
        box = self._boxes.get((domain, user))
        # Before the folders are made: a first delivery measures a mailbox not there yet.
        (self.account(domain, user) if box is None else box.account).check_room(vsize)
        box = box or self._box(domain, user)
        try:
            return box, *self._write_new(box, content, vsize)
        except FileNotFoundError:  # the folders went away since they were found whole
            box = self._box(domain, user)
            return box, *self._write_new(box, content, vsize)

    def _begin_here(
        self, domain: str, user: str, content: bytes, vsize: int
    ) -> tuple[_Box, str, int] | None:
        """``_begin`` on the caller's thread when that is quick: a small message for a
        mailbox found whole, whose quota is known without measuring it; else None."""
        box = self._boxes.get((domain, user))
        if box is None or len(content) > _WRITE_HERE or not box.account.room_at_once(vsize):
            return None
        try:
            return box, *self._write_new(box, content, vsize)
        except FileNotFoundError:
            return None  # the folders went away: ``_begin`` makes them again

    def _write_new(self, box: _Box, content: bytes, vsize: int) -> tuple[str, int]:
        """A new file in ``box``'s ``tmp/`` holding ``content``, not yet fsync'ed: its
        name and open descriptor."""
        name, fd = self._create_tmp(box.tmp, len(content), vsize)
        _write_all(fd, f"{box.tmp}/{name}", content)
        return name, fd

    def _landing(
        self, box: _Box, name: str, vsize: int
    ) -> tuple[str, str, str, Callable[[], None]]:
        """``GroupSync.land``'s arguments after the descriptor for ``tmp/<name>``."""

        def landed() -> None:
            try:
                box.files.record_delivery(name, vsize)
            except OSError as error:  # durable already: the next look numbers it
                path = box.path / name
                _log.warning("delivered %s, but could not number it yet: %s", path, error)
            self.watchers.changed(box.path)

        return f"{box.tmp}/{name}", f"{box.new}/{name}", box.new, landed

    def _box(self, domain: str, user: str) -> _Box:
        """``user@domain``'s Maildir made whole (its folders made where missing) and
        remembered: later deliveries find it in ``_boxes`` and build no paths."""
        maildir = self.path(domain, user)
        self._ensure_folders(maildir)
        box = _Box(
            maildir,
            str(maildir / "tmp"),
            str(maildir / "new"),
            self.account(domain, user),
            self.folder_files(maildir),
        )
        if len(self._boxes) >= _BOXES_KEPT:
            self._boxes.clear()
        self._boxes[(domain, user)] = box
        return box

    def _unique_name(self, size: int, vsize: int, when: float | None = None) -> str:
        now = self._clock.time() if when is None else max(0.0, when)
        seconds = int(now)
        micros = int((now - seconds) * 1_000_000)
        with self._lock:
            counter = next(self._counter)
        unique = f"M{micros}P{os.getpid()}Q{counter}R{self._random}"
        return f"{seconds}.{unique}.{self._host},S={size},W={vsize}"

    def _create_tmp(
        self, tmp_dir: Path | str, size: int, vsize: int, when: float | None = None
    ) -> tuple[str, int]:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        for _ in range(_CREATE_TRIES):
            name = self._unique_name(size, vsize, when)
            try:
                return name, os.open(f"{tmp_dir}/{name}", flags, _FILE_MODE)
            except FileExistsError:
                continue  # another process with our pid (a container) or a stale file
        raise FileExistsError(f"no unique file name in {tmp_dir} after {_CREATE_TRIES} tries")

    def _ensure_folders(self, maildir: Path) -> None:
        """Make ``maildir`` whole (0700 folders, each durable in its parent) if it is not.

        ``maildir`` itself appears only complete (see the module's docstring); one that is
        already there but lacks a subfolder (made by hand, or by an older postroom that
        crashed half-way) gets the ones it lacks.
        """
        if all((maildir / sub).is_dir() for sub in SUBFOLDERS):
            return
        self.root.mkdir(mode=_FOLDER_MODE, parents=True, exist_ok=True)
        user_dir = maildir.parent
        for folder in (user_dir.parent, user_dir):
            _make_folder(folder)
        if not maildir.exists():
            _publish_whole(maildir)
        for sub in SUBFOLDERS:
            _make_folder(maildir / sub)


def _make_folder(folder: Path) -> None:
    """Create ``folder`` (0700) and make it durable in its parent, unless it exists."""
    try:
        folder.mkdir(mode=_FOLDER_MODE)
    except FileExistsError:
        return
    fsync_dir(folder.parent)


def _publish_whole(maildir: Path) -> None:
    """Build ``maildir`` with its subfolders beside it, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=f".{maildir.name}.", dir=maildir.parent))  # 0700
    try:
        for sub in SUBFOLDERS:
            (staging / sub).mkdir(mode=_FOLDER_MODE)
        fsync_dir(staging)
        try:
            os.rename(staging, maildir)
        except OSError as error:
            # Another delivery published it first (a non-empty folder is never replaced).
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        else:
            fsync_dir(maildir.parent)
    finally:
        # Left only when the rename did not happen: it holds nothing but empty folders.
        shutil.rmtree(staging, ignore_errors=True)
