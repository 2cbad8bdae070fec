"""One user's Maildir: folders (Maildir++), subscriptions, and the async face of
``FolderFiles``. Implements ``postroom.mailbox.MailAccount``.

Every method runs its file work in a worker thread. The folders of ``DEFAULT_FOLDERS``
are made (and subscribed) on the account's first use; an account with no Maildir yet
gets one then, as a delivery would make it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from postroom.mailbox.base import (
    DEFAULT_FOLDERS,
    INBOX,
    SEPARATOR,
    AppendResult,
    CopyResult,
    FlagChange,
    FolderChanges,
    FolderExists,
    FolderInfo,
    FolderStatus,
    MailboxError,
    MessageInfo,
    NoSuchFolder,
    Quota,
    QuotaExceeded,
    StoreResult,
)
from postroom.mailbox.folder import FolderFiles, Snapshot
from postroom.mailbox.message import MessageFile
from postroom.mailbox.names import canonical, dir_name, folder_name
from postroom.mailbox.quota import (
    QUOTA_FILE,
    QuotaFile,
    read_quota_file,
    write_limit,
    write_totals,
)
from postroom.mailbox.watch import FolderWatch

if TYPE_CHECKING:
    from postroom.mailbox.maildir import Maildir

__all__ = ["MaildirAccount"]

SUBSCRIPTIONS: Final = "subscriptions"
_SPECIAL: Final = dict(DEFAULT_FOLDERS)
_FOLDER_MODE: Final = 0o700


class MaildirAccount:
    def __init__(self, store: Maildir, domain: str, user: str) -> None:
        self._store = store
        self.domain = domain
        self.user = user
        self.path = store.path(domain, user)
        self._quota_file = f"{self.path}/{QUOTA_FILE}"  # read on every RCPT and delivery
        self._ready = False

    # -- folders ---------------------------------------------------------------------
    def _folder_path(self, name: str) -> Path:
        return self.path / dir_name(name)

    def _files(self, name: str) -> FolderFiles:
        """The folder ``name``; ``NoSuchFolder`` when it does not exist."""
        self._ensure()
        path = self._folder_path(name)
        if not (path / "cur").is_dir():
            raise NoSuchFolder(f"no folder {canonical(name)!r}")
        return self._store.folder_files(path)

    def _ensure(self) -> None:
        if self._ready:
            return
        self._store.ensure_maildir(self.path)
        made = False
        for name, _ in DEFAULT_FOLDERS:
            if not (self._folder_path(name) / "cur").is_dir():
                with contextlib.suppress(FolderExists):  # another session made it just now
                    self._make_folder(name)
                made = True
        if made:
            subscribed = self._subscriptions()
            self._write_subscriptions(subscribed | {name for name, _ in DEFAULT_FOLDERS})
        self._ready = True

    def _make_folder(self, name: str) -> None:
        path = self._folder_path(name)
        staging = Path(tempfile.mkdtemp(prefix=".tmp-folder.", dir=self.path.parent))
        try:
            for sub in ("tmp", "new", "cur"):
                (staging / sub).mkdir(mode=_FOLDER_MODE)
            (staging / "maildirfolder").touch(mode=0o600)  # Maildir++: "a folder, not a root"
            try:
                os.rename(staging, path)
            except OSError as exc:
                if path.exists():
                    raise FolderExists(f"folder {canonical(name)!r} exists") from exc
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _folder_names(self) -> list[str]:
        names = [INBOX]
        with os.scandir(self.path) as it:
            for entry in it:
                name = folder_name(entry.name)
                if name is not None and entry.is_dir() and (Path(entry.path) / "cur").is_dir():
                    names.append(name)
        return sorted(names, key=lambda n: (n != INBOX, n))

    def _subscriptions(self) -> set[str]:
        try:
            text = (self.path / SUBSCRIPTIONS).read_text("utf-8")
        except FileNotFoundError:
            return set()
        return {line for line in text.splitlines() if line}

    def _write_subscriptions(self, names: Iterable[str]) -> None:
        tmp = self.path / f"{SUBSCRIPTIONS}.{secrets.token_hex(6)}.tmp"
        tmp.write_text("".join(f"{n}\n" for n in sorted(names)), "utf-8")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path / SUBSCRIPTIONS)

    def _list(self) -> list[FolderInfo]:
        self._ensure()
        names = self._folder_names()
        subscribed = self._subscriptions()
        return [
            FolderInfo(
                name=name,
                special_use=_SPECIAL.get(name),
                subscribed=name in subscribed,
                has_children=any(other.startswith(name + SEPARATOR) for other in names),
            )
            for name in names
        ]

    def _create(self, name: str) -> None:
        self._ensure()
        name = canonical(name)
        if name == INBOX or (self._folder_path(name) / "cur").is_dir():
            raise FolderExists(f"folder {name!r} exists")
        self._make_folder(name)

    def _delete(self, name: str) -> None:
        self._ensure()
        name = canonical(name)
        if name == INBOX:
            raise MailboxError("INBOX cannot be deleted")
        path = self._folder_path(name)
        if not path.is_dir():
            raise NoSuchFolder(f"no folder {name!r}")
        # Out of sight first (one rename), then removed; children are folders of their own.
        doomed = self.path / f".{os.urandom(6).hex()}.deleted"  # "." + hex: never a folder name
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        self._write_subscriptions(self._subscriptions() - {name})

    def _rename(self, old: str, new: str) -> None:
        self._ensure()
        old, new = canonical(old), canonical(new)
        if INBOX in (old, new):
            raise MailboxError("INBOX cannot be renamed")
        if not (self._folder_path(old) / "cur").is_dir():
            raise NoSuchFolder(f"no folder {old!r}")
        if self._folder_path(new).exists():
            raise FolderExists(f"folder {new!r} exists")
        moves = [
            (name, new + name[len(old) :])
            for name in self._folder_names()
            if name == old or name.startswith(old + SEPARATOR)
        ]
        for before, after in moves:
            os.rename(self._folder_path(before), self._folder_path(after))
        renamed = dict(moves)
        self._write_subscriptions(renamed.get(n, n) for n in self._subscriptions())

    def _subscribe(self, name: str, subscribed: bool) -> None:
        self._ensure()
        name = canonical(name)
        names = self._subscriptions()
        self._write_subscriptions(names | {name} if subscribed else names - {name})

    # -- async face ----------------------------------------------------------------
    async def folders(self) -> list[FolderInfo]:
        return await asyncio.to_thread(self._list)

    async def create_folder(self, name: str) -> None:
        await asyncio.to_thread(self._create, name)

    async def delete_folder(self, name: str) -> None:
        await asyncio.to_thread(self._delete, name)

    async def rename_folder(self, old: str, new: str) -> None:
        await asyncio.to_thread(self._rename, old, new)

    async def subscribe(self, name: str, subscribed: bool = True) -> None:
        await asyncio.to_thread(self._subscribe, name, subscribed)

    async def _snapshot(self, folder: str) -> Snapshot:
        return await asyncio.to_thread(lambda: self._files(folder).snapshot())

    async def status(self, folder: str) -> FolderStatus:
        return (await self._snapshot(folder)).status

    async def messages(self, folder: str) -> tuple[FolderStatus, Sequence[MessageInfo]]:
        snapshot = await self._snapshot(folder)
        return snapshot.status, snapshot.infos

    async def changes(
        self, folder: str, since: int, *, looked: int | None = None
    ) -> FolderChanges | None:
        if looked is not None:  # a watch's look: answered from memory, without a thread
            files = self._store.seen_folder_files(self._folder_path(folder))
            answer = files.changes_seen(since, looked) if files is not None else None
            if answer is not None:
                return answer
        return await asyncio.to_thread(lambda: self._files(folder).changes(since))

    async def open_message(self, folder: str, uid: int) -> MessageFile | None:
        def open_() -> MessageFile | None:
            files = self._files(folder)
            snapshot = files.snapshot()
            at = snapshot.find(uid)
            if at is None:
                return None
            size = snapshot.infos[at].size
            try:
                return MessageFile(open(files.path / snapshot.paths[at], "rb"), size)
            except FileNotFoundError:  # expunged or renamed by someone else just now
                path = files.message_path(uid)
                return MessageFile(open(path, "rb"), size) if path else None

        return await asyncio.to_thread(open_)

    async def append(
        self,
        folder: str,
        data: bytes,
        *,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> AppendResult:
        def append_() -> AppendResult:
            files = self._files(folder)
            self.check_room(len(data))
            [uid] = files.add_files(
                [(lambda tmp: self._store.write_tmp(tmp, data, internal_date), flags)]
            )
            return AppendResult(files.snapshot().uidvalidity, uid)

        result = await asyncio.to_thread(append_)
        self._store.watchers.changed(self._folder_path(folder))
        return result

    async def copy(self, folder: str, uids: Iterable[int], target: str) -> CopyResult:
        return await self._copy(folder, uids, target, needs_room=True)

    async def _copy(
        self, folder: str, uids: Iterable[int], target: str, *, needs_room: bool
    ) -> CopyResult:
        def copy_() -> CopyResult:
            source = self._files(folder)
            into = self._files(target)
            snapshot = source.snapshot()
            found = [at for at in map(snapshot.find, sorted(set(uids))) if at is not None]
            infos = [snapshot.infos[at] for at in found]
            if needs_room:
                self.check_room(sum(info.size for info in infos))
            new = into.add_files(
                (self._linker(source.path / snapshot.paths[at], snapshot.infos[at]), info.flags)
                for at, info in zip(found, infos, strict=True)
            )
            return CopyResult(
                into.snapshot().uidvalidity, tuple(info.uid for info in infos), tuple(new)
            )

        result = await asyncio.to_thread(copy_)
        self._store.watchers.changed(self._folder_path(target))
        return result

    def _linker(self, source: Path, info: MessageInfo) -> Callable[[Path], str]:
        return lambda tmp: self._store.link_tmp(source, tmp, info.size, info.internal_date)

    async def move(self, folder: str, uids: Iterable[int], target: str) -> CopyResult:
        result = await self._copy(folder, uids, target, needs_room=False)  # no more room taken
        await asyncio.to_thread(
            lambda: self._files(folder).remove(set(result.source_uids), only_deleted=False)
        )
        self._store.watchers.changed(self._folder_path(folder))
        return result

    async def store(
        self,
        folder: str,
        uids: Iterable[int],
        flags: Collection[str],
        how: FlagChange,
        *,
        unchanged_since: int | None = None,
    ) -> StoreResult:
        wanted = list(uids)
        changed, failed = await asyncio.to_thread(
            lambda: self._files(folder).change_flags(wanted, flags, how, unchanged_since)
        )
        if changed:
            self._store.watchers.changed(self._folder_path(folder))
        return StoreResult(tuple(changed), tuple(failed))

    async def expunge(self, folder: str, uids: Iterable[int] | None = None) -> list[int]:
        def expunge_() -> list[int]:
            files = self._files(folder)
            wanted = set(uids) if uids is not None else {i.uid for i in files.snapshot().infos}
            return files.remove(wanted, only_deleted=True)

        removed = await asyncio.to_thread(expunge_)
        if removed:
            self._store.watchers.changed(self._folder_path(folder))
        return removed

    def _measure(self) -> tuple[int, int]:
        """Octets and messages in every folder: reads every folder's listing."""
        if not self.path.is_dir():
            return 0, 0
        octets = messages = 0
        for name in self._folder_names():
            path = self._folder_path(name)
            if (path / "cur").is_dir():
                folder_octets, folder_messages = self._store.folder_files(path).usage()
                octets += folder_octets
                messages += folder_messages
        return octets, messages

    async def usage(self) -> int:
        return await asyncio.to_thread(lambda: self._measure()[0])

    def quota_now(self, *, measure_unlimited: bool = True) -> Quota:
        """``quota()``, blocking (for code already in a worker thread). With a limit the
        usage is ``maildirsize``'s (``mailbox.quota``), measured only when the file asks
        for it; without one nothing is measured unless asked for (usage 0), so neither
        costs a delivery a look at the folders."""
        found = read_quota_file(self._quota_file)
        quota = self._known_quota(found, measure_unlimited=measure_unlimited)
        if quota is not None:
            return quota
        own = found.limit if found is not None else None
        limit = own if own is not None else self._store.default_quota
        usage, messages = self._measure()
        if limit and self.path.is_dir():  # asking makes no mailbox
            write_totals(self.path / QUOTA_FILE, own, usage, messages)
        return Quota(limit=limit, usage=usage, own=own is not None)

    def _known_quota(self, found: QuotaFile | None, *, measure_unlimited: bool) -> Quota | None:
        """The quota as ``found`` (``maildirsize`` as read) tells it without measuring
        the mailbox; None when it must be measured."""
        own = found.limit if found is not None else None
        limit = own if own is not None else self._store.default_quota
        if not limit:
            if measure_unlimited:
                return None
            usage = 0
        elif found is not None and not found.needs_measuring(limit, time.time()):
            usage = found.octets
        else:
            return None
        return Quota(limit=limit, usage=usage, own=own is not None)

    def check_room(self, size: int) -> None:
        """``QuotaExceeded`` unless ``size`` more octets fit. Checked before a write,
        not under a lock: writers at the same moment may pass it together (a quota is
        a limit for people, not an allocator)."""
        self._refuse_beyond(self.quota_now(measure_unlimited=False), size)

    def room_at_once(self, size: int) -> bool:
        """``check_room`` where the quota is known without measuring (the common case:
        no limit, or ``maildirsize`` up to date), so the event loop's thread may ask:
        True once checked; False when measuring is needed (``check_room``'s work)."""
        quota = self._known_quota(read_quota_file(self._quota_file), measure_unlimited=False)
        if quota is None:
            return False
        self._refuse_beyond(quota, size)
        return True

    def _refuse_beyond(self, quota: Quota, size: int) -> None:
        if quota.refuses(size):
            raise QuotaExceeded(
                f"{self.user}@{self.domain} is over quota: {quota.usage} of {quota.limit} octets"
            )

    async def quota(self) -> Quota:
        return await asyncio.to_thread(self.quota_now)

    async def limited_quota(self) -> Quota | None:
        """The quota when a limit applies, else None. The limit is one small file, read
        here (a missing file, the common case, costs one failed open); only measuring
        the usage against a limit goes to a thread: a thread hop per RCPT cost more than
        the read itself."""
        quota = self._known_quota(read_quota_file(self._quota_file), measure_unlimited=False)
        if quota is None:
            quota = await asyncio.to_thread(
                functools.partial(self.quota_now, measure_unlimited=False)
            )
        return quota if quota.limit else None

    async def set_quota(self, limit: int | None) -> None:
        def set_quota_() -> None:
            self._store.ensure_maildir(self.path)
            write_limit(self.path / QUOTA_FILE, limit)

        await asyncio.to_thread(set_quota_)

    @contextlib.asynccontextmanager
    async def watch(self, folder: str) -> AsyncIterator[FolderWatch]:
        await asyncio.to_thread(self._files, folder)  # NoSuchFolder before watching
        async with self._store.watchers.watch(self._folder_path(folder)) as watch:
            yield watch
