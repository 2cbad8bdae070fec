"""The asyncio driver of one IMAP connection: read -> core -> mailbox store -> write.

The core (``connection``) frames and parses commands and keeps the protocol state; this
driver answers them over the user's ``MailAccount``: the login (through the shared AUTH
throttle, with SMTP's log line), STARTTLS, the selected mailbox's view and its updates,
FETCH streamed from the store in chunks (a large message is never held whole), IDLE
woken by the store's watch, and APPEND through the listener's size and quota policy.

A read that waits longer than ``autologout`` between commands ends the session with
BYE (RFC 3501 5.4: at least 30 minutes). An unforeseen exception is logged with the
client and listener; the client gets ``* BYE`` and never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from dataclasses import dataclass

from postroom.events.authlog import auth_account, log_auth
from postroom.imap import commands as c
from postroom.imap import responses as rs
from postroom.imap.connection import (
    Closed,
    Credentials,
    IdleDone,
    ImapConfig,
    ImapConnection,
    Request,
    StartTls,
    Write,
)
from postroom.imap.fetch import FetchWriter
from postroom.imap.search import Candidate, MessageFacts, any_key, matches, needs_content
from postroom.imap.view import MailboxView
from postroom.intake import Principal
from postroom.mailbox import MailAccount, MailboxStore, mailbox_key
from postroom.mailbox.base import (
    SEPARATOR,
    FlagChange,
    FolderExists,
    FolderInfo,
    FolderStatus,
    MailboxError,
    NoSuchFolder,
    QuotaExceeded,
    TooManyKeywords,
)
from postroom.mailbox.watch import FolderWatch
from postroom.net.logins import LoginGate
from postroom.net.sessions import GuardedSession
from postroom.net.stream import Stream

__all__ = ["ImapContext", "ImapSession"]

_log = logging.getLogger("postroom.imap")
_READ_SIZE = 16 * 1024
_CHARSETS = ("UTF-8", "US-ASCII")
_PERMANENT = (b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft", b"\\*")
_HOW = {"": FlagChange.REPLACE, "+": FlagChange.ADD, "-": FlagChange.REMOVE}
_NAMESPACE = b'* NAMESPACE (("" "/")) NIL NIL\r\n'


@dataclass(frozen=True, slots=True)
class ImapContext:
    """What every session of one listener shares."""

    role: str
    config: ImapConfig
    mailboxes: MailboxStore
    logins: LoginGate[Principal]  # the one way passwords are checked, by every door
    ssl_context: ssl.SSLContext | None
    autologout: float = 30 * 60.0  # RFC 3501 5.4
    command_timeout: float = 300.0  # a command (its literals included) once begun


class ImapSession(GuardedSession):
    def __init__(self, context: ImapContext, stream: Stream) -> None:
        super().__init__(stream, context.role, _log)
        self._ctx = context
        tls = stream.get_extra_info("ssl_object") is not None
        self.conn = ImapConnection(context.config, tls=tls)
        self._account: MailAccount | None = None
        self._view: MailboxView | None = None
        self._fetch: FetchWriter | None = None

    # -- lifecycle (a stop: a session waiting for a command, or idling, gets BYE) -----
    def _greeting(self) -> bytes:
        return self.conn.greeting()

    def _farewell(self, *, stopping: bool) -> None:
        text = "server shutting down" if stopping else "internal error, try again later"
        self._bye(text, code="UNAVAILABLE")

    def _bye(self, text: str, *, code: str | None = None) -> None:
        if not self._stream.is_closing():
            self._stream.write(rs.status("BYE", text, code=code))
        self.conn.logout()

    async def _read(self) -> bytes | None:
        """The next bytes; None (after BYE) when the client said nothing for too long."""
        busy = self.conn.in_command
        timeout = self._ctx.command_timeout if busy else self._ctx.autologout
        if self._stopping:
            self._bye("server shutting down", code="UNAVAILABLE")
            return None
        self._reading = not busy
        try:
            async with asyncio.timeout(timeout):
                return await self._stream.read(_READ_SIZE)
        except TimeoutError:
            _log.info("autologout of %s after %.0f s", self._ip, timeout)
            self._bye("autologout; idle for too long")
            return None
        finally:
            self._reading = False

    async def _loop(self) -> None:
        conn = self.conn
        while not conn.closed:
            data = await self._read()
            if data is None:
                return
            conn.receive_data(data)
            while not conn.closed and (event := conn.next_event()) is not None:
                await self._handle(event)
                await self._flush()
            await self._flush()

    async def _handle(self, event: object) -> None:
        match event:
            case Write(data=data):
                self._stream.write(data)
            case Closed():
                self.conn.logout()
            case StartTls(tag=tag):
                await self._start_tls(tag)
            case Credentials():
                await self._credentials(event)
            case Request(tag=tag, command=command):
                await self._request(tag, command)
            case IdleDone(tag=tag, ok=ok):  # DONE outside of _idle: never, as framed
                self._stream.write(rs.tagged(tag, "OK" if ok else "BAD", "IDLE terminated"))

    def _ok(self, tag: str, text: str, *, code: str | None = None) -> None:
        self._stream.write(rs.tagged(tag, "OK", text, code=code))

    def _no(self, tag: str, text: str, *, code: str | None = None) -> None:
        self._stream.write(rs.tagged(tag, "NO", text, code=code))

    # -- not authenticated ---------------------------------------------------------------
    async def _start_tls(self, tag: str) -> None:
        context = self._ctx.ssl_context
        assert context is not None  # the core offers STARTTLS only with a context
        self._ok(tag, "Begin TLS negotiation now")
        # Bytes pipelined behind STARTTLS must never be read as if they came over TLS
        # (CVE-2011-0411 class): the core drops what it framed, the stream the rest.
        self.conn.start_tls()
        try:
            await self._stream.start_tls(context, handshake_timeout=self._ctx.command_timeout)
        except (ssl.SSLError, OSError) as exc:
            _log.info("TLS handshake with %s failed: %s", self._ip, exc)
            self.conn.logout()

    async def _credentials(self, event: Credentials) -> None:
        if event.authzid not in ("", event.username):
            self._no(event.tag, "authorization identity refused", code="AUTHORIZATIONFAILED")
            return
        await self._log_in(event.tag, event.username, event.password)

    async def _log_in(self, tag: str, username: str, password: str) -> None:
        account = auth_account(username)
        login = await self._ctx.logins.login(self._ip or "unknown", account, username, password)
        principal = login.who
        if login.verdict == "unavailable":
            self._no(tag, "logins are not possible now; try again later", code="UNAVAILABLE")
            return
        if login.verdict == "throttled":
            log_auth(_log, "throttled", self._ip, account, self._ctx.role)
            self._no(tag, "too many failed logins; try again later", code="UNAVAILABLE")
            return
        if principal is None:
            log_auth(_log, "failed", self._ip, account, self._ctx.role)
            self._no(tag, "invalid credentials", code="AUTHENTICATIONFAILED")
            return
        domain, user = mailbox_key(principal.name)
        self._account = self._ctx.mailboxes.account(domain, user)
        self.conn.authenticated()
        code = "CAPABILITY " + " ".join(self.conn.capabilities())
        self._ok(tag, "logged in", code=code)

    # -- commands ------------------------------------------------------------------
    async def _request(self, tag: str, command: c.Command) -> None:
        try:
            await self._dispatch(tag, command)
        except NoSuchFolder:
            self._no(tag, "no such mailbox", code="NONEXISTENT")
        except FolderExists:
            self._no(tag, "mailbox exists", code="ALREADYEXISTS")
        except QuotaExceeded:
            self._no(tag, "mailbox is full", code="OVERQUOTA")
        except TooManyKeywords:
            self._no(tag, "no room for another keyword in this mailbox", code="LIMIT")
        except (MailboxError, ValueError) as error:
            self._no(tag, str(error) or "cannot do that", code="CANNOT")

    async def _dispatch(self, tag: str, command: c.Command) -> None:  # noqa: C901 (dispatch)
        match command:
            case c.Simple(name=name):
                await self._simple(tag, name)
            case c.Login(user=user, password=password):
                await self._log_in(tag, user, password)
            case c.Select():
                await self._select(tag, command)
            case c.MailboxCommand():
                await self._mailbox_command(tag, command)
            case c.Rename(old=old, new=new):
                await self._folders.rename_folder(old, _strip_separator(new))
                self._ok(tag, "RENAME completed")
            case c.ListCommand():
                await self._list(tag, command)
            case c.Status(mailbox=mailbox, items=items):
                status = await self._folders.status(mailbox)
                self._stream.write(self._status_line(mailbox, status, items))
                self._ok(tag, "STATUS completed")
            case c.Append():
                await self._append(tag, command)
            case c.Enable(capabilities=names):
                await self._enable(tag, names)
            case c.Id():
                self._stream.write(rs.untagged(b'ID ("name" "postroom")'))
                self._ok(tag, "ID completed")
            case c.GetQuota(root=root):
                await self._quota(tag, root, root_only=True)
            case c.Expunge(uids=uids):
                await self._expunge(tag, uids)
            case c.Fetch():
                await self._fetch_command(tag, command)
            case c.Store():
                await self._store(tag, command)
            case c.CopyMove():
                await self._copy_move(tag, command)
            case c.Search():
                await self._search(tag, command)
            case c.Authenticate():  # the core answers AUTHENTICATE itself
                raise AssertionError(command)  # pragma: no cover

    @property
    def _folders(self) -> MailAccount:
        assert self._account is not None, "the core lets no mailbox command past login"
        return self._account

    async def _simple(self, tag: str, name: str) -> None:
        if name == "CAPABILITY":
            self._stream.write(
                rs.untagged(b"CAPABILITY " + " ".join(self.conn.capabilities()).encode())
            )
            self._ok(tag, "CAPABILITY completed")
        elif name in ("NOOP", "CHECK"):
            await self._refresh()
            self._ok(tag, f"{name} completed")
        elif name == "LOGOUT":
            self._stream.write(rs.status("BYE", "logging out"))
            self._ok(tag, "LOGOUT completed")
            self.conn.logout()
        elif name == "NAMESPACE":
            self._stream.write(_NAMESPACE)
            self._ok(tag, "NAMESPACE completed")
        elif name == "IDLE":
            await self._idle(tag)
        elif name in ("CLOSE", "UNSELECT"):
            view = self._view
            if name == "CLOSE" and view is not None and not view.read_only:
                await self._folders.expunge(view.folder)
            self._unselect()
            self._ok(tag, f"{name} completed")

    # -- mailboxes -----------------------------------------------------------------
    def _unselect(self) -> None:
        self._view = None
        self._fetch = None
        self.conn.unselected()

    async def _select(self, tag: str, command: c.Select) -> None:
        if self._view is not None:
            self._unselect()
            self._stream.write(rs.status("OK", "previous mailbox closed", code="CLOSED"))
        status, messages = await self._folders.messages(command.mailbox)
        if command.condstore:
            self.conn.condstore = True
        view = MailboxView(command.mailbox, status.uidvalidity, command.read_only, messages)
        view.condstore = self.conn.condstore
        view.version = status.version
        keywords = sorted({flag for m in messages for flag in m.flags if not flag.startswith("\\")})
        flags = [b"\\Answered", b"\\Flagged", b"\\Deleted", b"\\Seen", b"\\Draft"]
        flags += [k.encode("ascii") for k in keywords]
        write = self._stream.write
        write(rs.untagged(b"FLAGS " + rs.paren(flags)))
        permanent = (
            b"()" if command.read_only else rs.paren([*_PERMANENT[:5], *flags[5:], _PERMANENT[5]])
        )
        write(rs.status("OK", "flags allowed", code="PERMANENTFLAGS " + permanent.decode("ascii")))
        write(rs.untagged(b"%d EXISTS" % view.exists))
        write(rs.untagged(b"0 RECENT"))
        unseen = next(
            (seq for seq, m in enumerate(view.messages, 1) if "\\Seen" not in m.flags),
            None,
        )
        if unseen is not None:
            write(rs.status("OK", "first unseen", code=f"UNSEEN {unseen}"))
        write(rs.status("OK", "UIDs valid", code=f"UIDVALIDITY {status.uidvalidity}"))
        write(rs.status("OK", "predicted next UID", code=f"UIDNEXT {status.uidnext}"))
        write(rs.status("OK", "highest", code=f"HIGHESTMODSEQ {status.highestmodseq}"))
        self._view = view
        self._fetch = FetchWriter(self._stream, self._folders, view)
        self.conn.selected(read_only=command.read_only)
        mode = "READ-ONLY" if command.read_only else "READ-WRITE"
        self._ok(tag, f"{'EXAMINE' if command.read_only else 'SELECT'} completed", code=mode)

    async def _refresh(self, *, with_uid: bool = False, looked: int | None = None) -> None:
        view = self._view
        if view is None:
            return
        try:
            changes = await self._folders.changes(view.folder, view.version, looked=looked)
            if changes is None:  # too far behind: compare every message
                status, messages = await self._folders.messages(view.folder)
        except NoSuchFolder:  # deleted or renamed under us (RFC 3501 has no clean answer)
            self._bye("the selected mailbox was removed")
            return
        if changes is None:
            view.version = status.version
            update = view.update(messages, with_uid=with_uid)
            view.adopt(messages)
            self._stream.write(update)
        else:
            view.version = changes.version
            update = view.apply(
                changes.expunged,
                changes.changed,
                changes.added,
                with_uid=with_uid,
                now=changes.messages,
            )
            self._stream.write(update)

    async def _mailbox_command(self, tag: str, command: c.MailboxCommand) -> None:
        name, mailbox = command.name, command.mailbox
        folders = self._folders
        if name == "CREATE":
            if command.special_use:
                self._no(tag, "special-use attributes are fixed here", code="USEATTR")
                return
            await self._create(_strip_separator(mailbox))
        elif name == "DELETE":
            if self._view is not None and self._view.folder == mailbox:
                self._unselect()
            await folders.delete_folder(mailbox)
        elif name in ("SUBSCRIBE", "UNSUBSCRIBE"):
            await folders.subscribe(mailbox, name == "SUBSCRIBE")
        elif name == "GETQUOTAROOT":
            await folders.status(mailbox)  # NONEXISTENT for a mailbox that is not there
            self._stream.write(
                rs.untagged(b"QUOTAROOT " + rs.mailbox(mailbox, utf8=self.conn.utf8) + b' ""')
            )
            await self._quota(tag, "", root_only=False)
            return
        self._ok(tag, f"{name} completed")

    async def _create(self, name: str) -> None:
        """The folder and any parent it lacks (RFC 3501 6.3.3: superiors are created)."""
        parts = name.split(SEPARATOR)
        for depth in range(1, len(parts)):
            with contextlib.suppress(FolderExists):
                await self._folders.create_folder(SEPARATOR.join(parts[:depth]))
        await self._folders.create_folder(name)

    async def _quota(self, tag: str, root: str, *, root_only: bool) -> None:
        """RFC 9208: one quota root, "", for all of a user's folders; STORAGE in KiB."""
        if root != "":
            self._no(tag, "no such quota root", code="NONEXISTENT")
            return
        quota = await self._folders.quota()
        if quota.limit:
            used, limit = (quota.usage + 1023) // 1024, quota.limit // 1024
            self._stream.write(rs.untagged(b'QUOTA "" (STORAGE %d %d)' % (used, limit)))
        self._ok(tag, "GETQUOTA completed" if root_only else "GETQUOTAROOT completed")

    async def _list(self, tag: str, command: c.ListCommand) -> None:
        utf8 = self.conn.utf8
        write = self._stream.write
        verb = b"LSUB" if command.lsub else b"LIST"
        if command.patterns == ("",) and not command.lsub:
            write(rs.untagged(b'LIST (\\Noselect) "/" ""'))
            self._ok(tag, "LIST completed")
            return
        matchers = [_pattern(command.reference + p) for p in command.patterns]
        subscribed_only = command.lsub or "SUBSCRIBED" in command.select_options
        show_subscribed = not command.lsub and (
            "SUBSCRIBED" in command.select_options or "SUBSCRIBED" in command.return_options
        )
        special_only = "SPECIAL-USE" in command.select_options
        for folder in await self._folders.folders():
            if not any(m.match(folder.name) for m in matchers):
                continue
            if (subscribed_only and not folder.subscribed) or (
                special_only and folder.special_use is None
            ):
                continue
            attributes = _attributes(folder, show_subscribed=show_subscribed)
            write(
                rs.untagged(
                    verb
                    + b" "
                    + rs.paren(attributes)
                    + b' "/" '
                    + rs.mailbox(folder.name, utf8=utf8)
                )
            )
            if command.return_status:
                status = await self._folders.status(folder.name)
                write(self._status_line(folder.name, status, command.return_status))
        self._ok(tag, f"{verb.decode()} completed")

    def _status_line(self, mailbox: str, status: FolderStatus, items: tuple[str, ...]) -> bytes:
        values = {
            "MESSAGES": status.messages,
            "RECENT": 0,
            "UIDNEXT": status.uidnext,
            "UIDVALIDITY": status.uidvalidity,
            "UNSEEN": status.unseen,
            "SIZE": status.size,
            "HIGHESTMODSEQ": status.highestmodseq,
            "DELETED": status.deleted,
        }
        if "HIGHESTMODSEQ" in items:
            self.conn.condstore = True
        pairs = [b"%s %d" % (item.encode(), values[item]) for item in items]
        return rs.untagged(
            b"STATUS " + rs.mailbox(mailbox, utf8=self.conn.utf8) + b" " + rs.paren(pairs)
        )

    async def _enable(self, tag: str, names: tuple[str, ...]) -> None:
        enabled = []
        for name in names:
            if name == "CONDSTORE":
                self.conn.condstore = True
                enabled.append(name)
        self._stream.write(rs.untagged(b"ENABLED" + b"".join(b" " + n.encode() for n in enabled)))
        self._ok(tag, "ENABLE completed")

    async def _append(self, tag: str, command: c.Append) -> None:
        folders = self._folders
        size = len(command.message)
        if size > self._ctx.config.max_message_size:
            self._no(tag, "message too big", code="TOOBIG")
            return
        try:
            await folders.status(command.mailbox)
        except NoSuchFolder:
            self._no(tag, "no such mailbox", code="TRYCREATE")
            return
        date = command.date.timestamp() if command.date is not None else None
        result = await folders.append(
            command.mailbox, command.message, flags=command.flags, internal_date=date
        )
        if self._view is not None and self._view.folder == command.mailbox:
            await self._refresh()
        self._ok(tag, "APPEND completed", code=f"APPENDUID {result.uidvalidity} {result.uid}")

    # -- the selected mailbox ---------------------------------------------------------
    @property
    def _selected(self) -> MailboxView:
        assert self._view is not None, "the core lets these commands in the selected state only"
        return self._view

    def _messages(self, numbers: c.SequenceSet, *, uid: bool) -> list[tuple[int, int]]:
        view = self._selected
        if uid:
            return view.select(numbers.select(view.uids), uid=True)
        return view.select(numbers.select(range(1, view.exists + 1)), uid=False)

    async def _expunge(self, tag: str, uids: c.SequenceSet | None) -> None:
        view = self._selected
        if view.read_only:
            self._no(tag, "mailbox is read-only", code="READ-ONLY")
            return
        chosen = None if uids is None else [u for _, u in self._messages(uids, uid=True)]
        gone = await self._folders.expunge(view.folder, chosen)
        self._stream.write(view.expunged(gone))
        self._ok(tag, "EXPUNGE completed")

    async def _fetch_command(self, tag: str, command: c.Fetch) -> None:
        assert self._fetch is not None
        if command.changed_since is not None:
            self.conn.condstore = self._selected.condstore = True
        await self._fetch.fetch(self._messages(command.messages, uid=command.uid), command)
        self._ok(tag, "FETCH completed")

    async def _store(self, tag: str, command: c.Store) -> None:
        view = self._selected
        if view.read_only:
            self._no(tag, "mailbox is read-only", code="READ-ONLY")
            return
        if command.unchanged_since is not None:
            self.conn.condstore = view.condstore = True
        chosen = self._messages(command.messages, uid=command.uid)
        result = await self._folders.store(
            view.folder,
            [uid for _, uid in chosen],
            command.flags,
            _HOW[command.mode],
            unchanged_since=command.unchanged_since,
        )
        changed = {info.uid: info for info in result.changed}
        for seq, uid in chosen:
            info = changed.get(uid)
            if info is None:
                continue
            view.changed(info)
            if command.silent and not view.condstore:
                continue
            uid_item = b"UID %d " % uid if command.uid else b""
            self._stream.write(
                rs.untagged(b"%d FETCH (%s%s)" % (seq, uid_item, view.flags_item(info)))
            )
        code = None
        if result.failed:
            code = "MODIFIED " + rs.number_list(sorted(result.failed)).decode()
        self._ok(tag, "STORE completed", code=code)

    async def _copy_move(self, tag: str, command: c.CopyMove) -> None:
        view = self._selected
        verb = "MOVE" if command.move else "COPY"
        if command.move and view.read_only:
            self._no(tag, "mailbox is read-only", code="READ-ONLY")
            return
        uids = [uid for _, uid in self._messages(command.messages, uid=command.uid)]
        try:
            await self._folders.status(command.mailbox)
        except NoSuchFolder:
            self._no(tag, "no such mailbox", code="TRYCREATE")
            return
        if not uids:
            self._ok(tag, f"{verb} completed (no messages)")
            return
        action = self._folders.move if command.move else self._folders.copy
        result = await action(view.folder, uids, command.mailbox)
        code = None
        if result.source_uids:
            sources = rs.number_list(result.source_uids).decode()
            targets = rs.number_list(result.target_uids).decode()
            code = f"COPYUID {result.uidvalidity} {sources} {targets}"
        if command.move:
            if code is not None:
                self._stream.write(rs.status("OK", "moved", code=code))
            self._stream.write(view.expunged(result.source_uids))
            self._ok(tag, "MOVE completed")
            return
        if view.folder == command.mailbox:
            await self._refresh()
        self._ok(tag, "COPY completed", code=code)

    async def _search(self, tag: str, command: c.Search) -> None:
        if command.charset is not None and command.charset not in _CHARSETS:
            self._no(tag, "unsupported charset", code="BADCHARSET (UTF-8 US-ASCII)")
            return
        view = self._selected
        content = needs_content(command.criteria)
        largest_uid = view.largest_uid
        found: list[tuple[int, MessageFacts]] = []
        for seq, facts in enumerate(list(view.messages), start=1):
            candidate = Candidate(seq, facts, view.exists, largest_uid)
            if content:
                candidate.content = await self._read_whole(view.folder, facts.uid)
                if candidate.content is None:
                    continue
            if matches(command.criteria, candidate):
                found.append((seq, facts))
        numbers = [facts.uid if command.uid else seq for seq, facts in found]
        modseq = b""
        if any_key(command.criteria, lambda k: isinstance(k, c.ModSeqKey)) and found:
            modseq = b" (MODSEQ %d)" % max(facts.modseq for _, facts in found)
        if command.returns is None:
            self._stream.write(
                rs.untagged(b"SEARCH" + b"".join(b" %d" % n for n in numbers) + modseq)
            )
        else:
            self._stream.write(_esearch(tag, command, numbers))
        self._ok(tag, "SEARCH completed")

    async def _read_whole(self, folder: str, uid: int) -> bytes | None:
        message = await self._folders.open_message(folder, uid)
        if message is None:
            return None
        with message:
            parts = []
            while chunk := message.read():
                parts.append(chunk)
        return b"".join(parts)

    async def _idle(self, tag: str) -> None:
        """RFC 2177: updates as they happen until DONE; a delivery wakes the watch."""
        self.conn.idle(tag)
        view = self._view
        async with contextlib.AsyncExitStack() as stack:
            watch = None
            if view is not None:
                # Watch before the client hears "+": a delivery from then on wakes it,
                # and one that came before (since the last look) is reported now.
                watch = await stack.enter_async_context(self._folders.watch(view.folder))
            self._stream.write(rs.continuation("idling"))
            if watch is not None:
                await self._refresh()
            await self._flush()
            await self._idle_until_done(watch)

    async def _idle_until_done(self, watch: FolderWatch | None) -> None:
        conn = self.conn
        waker = asyncio.ensure_future(watch.wait()) if watch is not None else None
        reader: asyncio.Future[bytes | None] | None = None
        try:
            while not conn.closed:
                if reader is None:
                    reader = asyncio.ensure_future(self._read())
                waiting: set[asyncio.Future[object]] = {reader}  # type: ignore[arg-type]
                if waker is not None:
                    waiting.add(waker)  # type: ignore[arg-type]
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if waker is not None and waker in done and watch is not None:
                    await self._refresh(looked=watch.version)
                    await self._flush()
                    waker = asyncio.ensure_future(watch.wait())
                if reader not in done:
                    continue
                data, reader = reader.result(), None
                if data is None or await self._idle_input(data):
                    return
        finally:
            for future in (waker, reader):
                if future is not None:
                    future.cancel()

    async def _idle_input(self, data: bytes) -> bool:
        """Bytes that came while idling; True once DONE (or something else) ended IDLE."""
        conn = self.conn
        conn.receive_data(data)
        while not conn.closed and (event := conn.next_event()) is not None:
            if isinstance(event, IdleDone):
                status = "OK" if event.ok else "BAD"
                self._stream.write(rs.tagged(event.tag, status, "IDLE terminated"))
                return True
            await self._handle(event)
        return conn.closed


def _strip_separator(name: str) -> str:
    return name[:-1] if name.endswith(SEPARATOR) and len(name) > 1 else name


def _pattern(pattern: str) -> re.Pattern[str]:
    """A LIST pattern: ``*`` matches anything, ``%`` anything but the separator."""
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(char))
    regex = "".join(out)
    if pattern.upper().startswith("INBOX"):
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(regex + r"\Z", re.DOTALL)


def _attributes(folder: FolderInfo, *, show_subscribed: bool) -> list[bytes]:
    attributes = [b"\\HasChildren" if folder.has_children else b"\\HasNoChildren"]
    if folder.special_use is not None:
        attributes.append(str(folder.special_use).encode("ascii"))
    if show_subscribed and folder.subscribed:
        attributes.append(b"\\Subscribed")
    return attributes


def _esearch(tag: str, command: c.Search, numbers: list[int]) -> bytes:
    """RFC 4731 ESEARCH: what RETURN asked for."""
    assert command.returns is not None
    out = b"ESEARCH (TAG " + rs.string(tag) + b")"
    if command.uid:
        out += b" UID"
    if numbers:
        for option in command.returns:
            if option == "MIN":
                out += b" MIN %d" % min(numbers)
            elif option == "MAX":
                out += b" MAX %d" % max(numbers)
            elif option == "ALL":
                out += b" ALL " + rs.number_list(sorted(numbers))
    if "COUNT" in command.returns:
        out += b" COUNT %d" % len(numbers)
    return rs.untagged(out)
