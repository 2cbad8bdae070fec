"""Local mail at rest: delivery into per-user mailboxes, and what POP3 and IMAP read.

``MailboxStore`` is the seam: the local mailer delivers through it, the POP3 and IMAP
sessions and the admin CLI read and change mail through ``MailboxStore.account()``'s
``MailAccount``. Both speak only the values of ``mailbox.base`` (folder names, UIDs,
flags), never paths, so an engine other than Maildir (one in the database, for many
nodes) can stand behind them without touching the protocol code.

Delivery: input a domain (A-labels), a user (lowercased local part), the message bytes
as stored (CRLF line endings) and the envelope facts; output the stored message's name.
``deliver`` returns only after the message is durable; a failure leaves nothing
half-written where readers look.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from postroom.mailbox.base import (
    AppendResult,
    CopyResult,
    FlagChange,
    FolderChanges,
    FolderInfo,
    FolderStatus,
    MessageInfo,
    Quota,
    StoreResult,
)
from postroom.mailbox.maildir import Maildir, check_folder_name, mailbox_key
from postroom.mailbox.message import MessageFile
from postroom.mailbox.watch import FolderWatch

__all__ = [
    "MailAccount",
    "MailDrop",
    "MailboxStore",
    "Maildir",
    "MessageFile",
    "check_folder_name",
    "mailbox_key",
]


class MailAccount(Protocol):
    """One user's folders. Every folder argument is a folder name (``mailbox.base``);
    an unknown one raises ``NoSuchFolder``, a name that cannot be one ``ValueError``.
    UIDs that name no message are skipped, never an error (IMAP's rule)."""

    domain: str
    user: str

    async def folders(self) -> list[FolderInfo]:
        """Every folder, INBOX first (the default folders are made on first use)."""
        ...

    async def create_folder(self, name: str) -> None:
        """``FolderExists`` if it does."""
        ...

    async def delete_folder(self, name: str) -> None:
        """The folder and its messages (not its children); INBOX: ``MailboxError``."""
        ...

    async def rename_folder(self, old: str, new: str) -> None:
        """With its children; INBOX: ``MailboxError``."""
        ...

    async def subscribe(self, name: str, subscribed: bool = True) -> None: ...

    async def status(self, folder: str) -> FolderStatus: ...

    async def messages(self, folder: str) -> tuple[FolderStatus, Sequence[MessageInfo]]:
        """The folder's messages in ascending UID order, and its status, as one look.
        The sequence may be the store's own, shared: copy it to change it."""
        ...

    async def changes(
        self, folder: str, since: int, *, looked: int | None = None
    ) -> FolderChanges | None:
        """What changed in ``folder`` since the look whose ``FolderStatus.version`` was
        ``since`` (or the ``FolderChanges.version`` of an earlier answer): expunged UIDs,
        messages whose flags changed, new messages. None when the store no longer knows
        (then ``messages()`` again). A session keeps its view current with this, so a
        change costs it what changed, not a look at every message. ``looked``: the
        version a watch reported (``FolderWatch.version``): the store may answer from
        that look, made once for every session watching, without looking again."""
        ...

    async def open_message(self, folder: str, uid: int) -> MessageFile | None:
        """The message's octets (CRLF line endings), to read in chunks and close;
        None when no message has ``uid``."""
        ...

    async def append(
        self,
        folder: str,
        data: bytes,
        *,
        flags: Collection[str] = (),
        internal_date: float | None = None,
    ) -> AppendResult:
        """Store ``data`` (CRLF line endings) durably; ``TooManyKeywords`` when a new
        keyword does not fit. Quota is the caller's check (``usage``)."""
        ...

    async def copy(self, folder: str, uids: Iterable[int], target: str) -> CopyResult: ...

    async def move(self, folder: str, uids: Iterable[int], target: str) -> CopyResult: ...

    async def store(
        self,
        folder: str,
        uids: Iterable[int],
        flags: Collection[str],
        how: FlagChange,
        *,
        unchanged_since: int | None = None,
    ) -> StoreResult: ...

    async def expunge(self, folder: str, uids: Iterable[int] | None = None) -> list[int]:
        """Remove the messages flagged ``\\Deleted`` (of ``uids`` only, when given:
        UID EXPUNGE); return their UIDs, ascending."""
        ...

    async def usage(self) -> int:
        """Octets held in all folders (what a quota counts)."""
        ...

    async def quota(self) -> Quota:
        """The account's limit (its own, else the store's default) and its usage; an
        account with no mail yet is not made by asking."""
        ...

    async def limited_quota(self) -> Quota | None:
        """``quota()`` when the account has a limit; None, without measuring what it
        holds, when it has none (the check every delivery and RCPT makes)."""
        ...

    async def set_quota(self, limit: int | None) -> None:
        """The account's own limit in octets (0: none); None: the default applies."""
        ...

    def watch(self, folder: str) -> AbstractAsyncContextManager[FolderWatch]:
        """While open, ``await watch.wait()`` returns after each change to ``folder``
        (new mail, flags, expunges), within a second of one made by another process."""
        ...


class MailDrop(Protocol):
    """What the local mailer needs: delivery into a user's INBOX."""

    async def deliver(
        self, domain: str, user: str, data: bytes, *, sender: str, recipient: str
    ) -> str:
        """Store ``data`` for ``user@domain``'s INBOX; return the stored message's name.

        Raises ``ValueError`` when ``domain`` or ``user`` cannot name a mailbox safely,
        and ``OSError`` for disk trouble (the caller decides temporary or permanent).
        """
        ...


class MailboxStore(MailDrop, Protocol):
    """Delivery, and each user's folders for POP3, IMAP and the admin CLI."""

    def account(self, domain: str, user: str) -> MailAccount:
        """``user@domain``'s folders; ``ValueError`` when the names are unsafe."""
        ...

    async def accounts(self) -> list[tuple[str, str]]:
        """Every ``(domain, user)`` holding mail, sorted."""
        ...
