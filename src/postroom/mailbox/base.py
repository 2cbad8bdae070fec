"""What a mailbox store holds, engine-neutral: folders, messages, flags, the results.

The protocols (``MailboxStore``, ``MailAccount``) are in ``postroom.mailbox``; these
are the values they take and return, so POP3, IMAP and the admin CLI depend on these
and never on Maildir's files.

Names: a *folder* is what IMAP calls a mailbox (INBOX, Sent, ...); an *account* is one
user's set of folders. Folder names are Unicode with ``/`` as the hierarchy separator;
``INBOX`` is matched without regard to case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, NamedTuple

__all__ = [
    "DEFAULT_FOLDERS",
    "INBOX",
    "SEPARATOR",
    "SYSTEM_FLAGS",
    "AppendResult",
    "CopyResult",
    "FlagChange",
    "FolderChanges",
    "FolderExists",
    "FolderInfo",
    "FolderStatus",
    "MailboxError",
    "MessageInfo",
    "NoSuchFolder",
    "Quota",
    "QuotaExceeded",
    "SpecialUse",
    "StoreResult",
    "TooManyKeywords",
]

INBOX: Final = "INBOX"
SEPARATOR: Final = "/"

SEEN: Final = "\\Seen"
ANSWERED: Final = "\\Answered"
FLAGGED: Final = "\\Flagged"
DELETED: Final = "\\Deleted"
DRAFT: Final = "\\Draft"
SYSTEM_FLAGS: Final = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT})
"""The system flags a store keeps (RFC 3501 2.3.2, without \\Recent); any other flag
name without a backslash is a keyword."""


class SpecialUse(StrEnum):
    """RFC 6154 attributes of the folders every account gets."""

    SENT = "\\Sent"
    DRAFTS = "\\Drafts"
    TRASH = "\\Trash"
    JUNK = "\\Junk"
    ARCHIVE = "\\Archive"


DEFAULT_FOLDERS: Final = (
    ("Sent", SpecialUse.SENT),
    ("Drafts", SpecialUse.DRAFTS),
    ("Trash", SpecialUse.TRASH),
    ("Junk", SpecialUse.JUNK),
    ("Archive", SpecialUse.ARCHIVE),
)
"""Made (and subscribed) on an account's first access, besides INBOX."""


class MailboxError(Exception):
    """A request the store cannot do; the message names the folder."""


class NoSuchFolder(MailboxError):
    pass


class FolderExists(MailboxError):
    pass


class QuotaExceeded(MailboxError):
    """The account's quota has no room for the message (IMAP ``[OVERQUOTA]``,
    SMTP ``552 5.2.2``)."""


class TooManyKeywords(MailboxError):
    """Maildir keeps at most 26 keywords per folder (the letters a-z)."""


class FlagChange(StrEnum):
    """How ``MailAccount.store`` applies flags: IMAP STORE's FLAGS, +FLAGS, -FLAGS."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True, slots=True)
class FolderInfo:
    name: str  # "INBOX", "Sent", "Archive/2026"
    special_use: SpecialUse | None
    subscribed: bool
    has_children: bool


@dataclass(frozen=True, slots=True)
class FolderStatus:
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    messages: int
    unseen: int  # messages without \Seen
    size: int  # octets, the sum of the messages' sizes
    deleted: int  # messages with \Deleted
    version: int = 0  # this look, for ``MailAccount.changes`` (the engine's own number)


class MessageInfo(NamedTuple):
    """One message as a look saw it. A named tuple, not a dataclass: a look at a large
    folder makes one per message, and a tuple is made in half the time."""

    uid: int
    flags: frozenset[str]  # system flags ("\\Seen") and keywords ("$Forwarded")
    internal_date: float  # Unix time
    size: int  # RFC 5322 size: octets with CRLF line endings, as read back
    modseq: int  # RFC 7162: the folder's modseq when this message last changed


@dataclass(frozen=True, slots=True)
class FolderChanges:
    """What changed in a folder between two looks (``MailAccount.changes``): what a
    session watching it reports, without comparing every message."""

    version: int  # the newer look's, to ask from next time
    expunged: tuple[int, ...]  # UIDs gone, ascending
    changed: tuple[MessageInfo, ...]  # messages whose flags (or modseq) changed, as now
    added: tuple[MessageInfo, ...]  # new messages, ascending UID
    messages: Sequence[MessageInfo] | None = None
    """Every message as of ``version``, ascending UID, when the engine has them at hand:
    shared by every session that asks (never to be changed), so a session whose view
    holds the same messages keeps a reference instead of a copy."""


@dataclass(frozen=True, slots=True)
class AppendResult:
    uidvalidity: int
    uid: int


@dataclass(frozen=True, slots=True)
class CopyResult:
    """RFC 4315 COPYUID: the source UIDs and the target UIDs they became, in order."""

    uidvalidity: int  # the target folder's
    source_uids: tuple[int, ...]
    target_uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Quota:
    """An account's storage limit and what it holds (RFC 9208's STORAGE, in octets)."""

    limit: int  # 0: no limit
    usage: int
    own: bool  # the account's own limit (``set_quota``), not the configured default

    def refuses(self, size: int = 0) -> bool:
        """Whether a message of ``size`` octets more would not fit (0: full already)."""
        return self.limit > 0 and (self.usage >= self.limit or self.usage + size > self.limit)


@dataclass(frozen=True, slots=True)
class StoreResult:
    changed: tuple[MessageInfo, ...]  # the messages whose flags changed, as they are now
    failed: tuple[int, ...]  # UIDs refused by UNCHANGEDSINCE (RFC 7162 MODIFIED)
