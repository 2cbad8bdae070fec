"""SqliteStore: the embedded engine.

One writer thread owns the only writing connection and commits through a
``GroupCommitter``; reads run on a small pool of reader threads with their own
connections, so a long write never blocks a read. WAL mode with ``synchronous=FULL``:
a commit is durable when it returns, and readers see it at once. Other processes
(the CLI, a second server) may open the same file; ``busy_timeout`` makes writers
queue for the lock, and every write transaction is ``BEGIN IMMEDIATE``.

The SQL lives beside this class: ``queue`` (enqueue, message reads), ``delivery``
(claims, outcomes, holds, retention), ``log`` (the email log), ``directory``.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from postroom.errors import StoreDamaged, StoreError, StoreUnavailable
from postroom.mail.events import MailEvent
from postroom.store import outbox
from postroom.store.admins import SQLITE, AdminOps
from postroom.store.deliveryops import DeliveryOps
from postroom.store.eventops import EventOps
from postroom.store.groupcommit import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_JOBS,
    GroupCommitter,
    Merge,
)
from postroom.store.limitops import LimitOps, Sql
from postroom.store.models import (
    ApiKeyRecord,
    Attempt,
    AttemptCount,
    AttemptTotals,
    IdempotencyRecord,
    LogQuery,
    MailerHealth,
    MessageMeta,
    NewMessage,
    ProviderEventRecord,
    QueueSummary,
    RecipientUpdate,
    StoredMessage,
    UserRecord,
)
from postroom.store.rows import (
    api_key_params,
    check_query,
    rollup_params,
    user_params,
)
from postroom.store.sqlite import api, delivery, directory, health, log, providers, queue
from postroom.store.sqlite.connection import Writer, connect_reader, store_error
from postroom.store.sqlite.limits import LocalLimits, limits_path
from postroom.store.sqlite.schema import SCHEMA_VERSION
from postroom.store.sqlite.sharedwriter import SharedWriter
from postroom.store.sqlite.writewire import Rows

__all__ = ["SCHEMA_VERSION", "SqliteStore"]

R = TypeVar("R")

# Point lookups on the event loop's thread (RCPT's directory question, a login's user
# record, a submitted message's suppression check) cost a few microseconds, far less
# than a hop to a reader thread and back; a WAL reader does not wait for the writer.
# Should it ever have to wait (another process recovering the WAL), it gives up after
# this long and the lookup goes to a reader thread after all.
_INLINE_BUSY_TIMEOUT = 0.01


class SqliteStore(DeliveryOps[sqlite3.Connection], EventOps, LimitOps, AdminOps):
    """The ``Store`` on one SQLite file. ``await start()`` before use, ``aclose()`` after.

    ``max_bytes`` caps the database size: an enqueue that would grow it further fails
    with ``StoreFull``, as on a full disk. ``on_damage`` is called with SQLite's message
    whenever it reports the file damaged (the error is raised as ``StoreDamaged`` too).
    The shared limits live in a file of their own beside it (``sqlite.limits``).
    """

    _delivery = delivery
    _dialect = outbox.SQLITE
    _admin_sql = SQLITE

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        readers: int = 2,
        max_bytes: int | None = None,
        max_batch_jobs: int = DEFAULT_MAX_JOBS,
        max_batch_bytes: int = DEFAULT_MAX_BYTES,
        on_damage: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_damage = on_damage
        self._busy_timeout = busy_timeout
        self.committer: GroupCommitter[sqlite3.Connection] = GroupCommitter(
            Writer(self.path, busy_timeout, max_bytes),
            max_jobs=max_batch_jobs,
            max_bytes=max_batch_bytes,
        )
        self._limits = LocalLimits(limits_path(self.path), busy_timeout=busy_timeout)
        self._closed = False
        self._shared: SharedWriter | None = None
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._inline: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(
            readers, thread_name_prefix="postroom-reader", initializer=self._open_reader
        )

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.committer.start()
            self._inline = connect_reader(self.path, _INLINE_BUSY_TIMEOUT)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def aclose(self) -> None:
        self._closed = True
        if self._shared is not None:
            await self._shared.aclose()
        await self.committer.aclose()
        await self._limits.aclose()
        await asyncio.to_thread(self._readers.shutdown)
        with self._reader_lock:
            conns, self._reader_conns = self._reader_conns, []
        for conn in conns:
            conn.close()
        if self._inline is not None:
            self._inline.close()
            self._inline = None

    async def _limit_tx(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        return await self._limits.run(keys, job)

    async def _limit_read(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        return await self._limits.read(keys, job)

    def _open_reader(self) -> None:
        conn = connect_reader(self.path, self._busy_timeout)
        self._local.conn = conn
        with self._reader_lock:
            self._reader_conns.append(conn)

    def _in_reader(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        conn: sqlite3.Connection = self._local.conn
        return fn(conn)

    async def _read(self, fn: Callable[[sqlite3.Connection], R], *, snapshot: bool = False) -> R:
        """Run ``fn`` on a reader; ``snapshot``: all its queries see one moment."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        if snapshot:
            fn = functools.partial(queue.snapshot, read=fn)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, self._in_reader, fn)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    async def _lookup(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        """A point lookup by primary key, on this thread (see _INLINE_BUSY_TIMEOUT)."""
        if self._inline is None or self._closed:
            return await self._read(fn)
        try:
            return fn(self._inline)
        except sqlite3.OperationalError:
            return await self._read(fn)  # locked: wait on a reader thread instead
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    async def _write(
        self,
        job: Callable[[sqlite3.Connection], R],
        weight: int = 0,
        *,
        merge: Merge[sqlite3.Connection, R] | None = None,
    ) -> R:
        try:
            return await self.committer.submit(job, weight, merge=merge)
        except (sqlite3.Error, OSError) as exc:  # OSError: reading the spool file
            raise self._error(exc) from exc

    async def _read_consistent(self, fn: Callable[[sqlite3.Connection], R]) -> R:
        return await self._read(fn, snapshot=True)

    def _error(self, exc: sqlite3.Error | OSError) -> StoreError:
        error = store_error(exc)
        if isinstance(error, StoreDamaged) and self._on_damage is not None:
            self._on_damage(str(exc))
        return error

    # -- the queue --------------------------------------------------------------------
    async def enqueue(self, message: NewMessage) -> None:
        if self._shared is not None and message.body.in_memory:
            await self._shared.write(queue.enqueue_rows(message))
            return
        job = queue.enqueue_job(message)
        merge = queue.insert_together if isinstance(job, queue.RowsJob) else None
        await self._write(job, message.size, merge=merge)

    async def _record_outcomes(
        self,
        message_id: str,
        updates: Sequence[RecipientUpdate],
        attempts: Sequence[Attempt],
        events: Sequence[MailEvent],
    ) -> None:
        rows = delivery.outcome_rows_of(message_id, updates, attempts, events)
        if self._shared is not None:
            try:
                await self._shared.write(rows)
                return
            except StoreUnavailable:
                pass  # the primary is gone or stuck: this process's own writer records them
        await self._record(delivery.record_rows_job(rows))

    def write_rows_soon(self, rows: Rows) -> asyncio.Future[None]:
        """Commit a write given as its rows (an accept worker's, see ``sharedwriter``):
        the future is settled once committed, with the engine's own exception if it
        failed (``storage_error`` names it as the store's)."""
        if isinstance(rows, queue.EnqueueRows):
            job = queue.rows_job(rows)
            return self.committer.submit_soon(job, rows.size, merge=queue.insert_together)
        return self.committer.submit_soon(delivery.record_rows_job(rows))

    def storage_error(self, exc: BaseException) -> StoreError | None:
        """The store's error for what a write failed with; None: not the storage's."""
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, sqlite3.Error | OSError):  # OSError: reading the spool file
            return self._error(exc)
        return None

    def write_through(self, shared: SharedWriter) -> None:
        """Hand new messages and delivery outcomes to another process's writer from now
        on (an accept worker's store: ``sharedwriter``); other writes stay on this
        store's own."""
        self._shared = shared

    async def message(self, message_id: str) -> StoredMessage | None:
        found = await self._read(
            functools.partial(
                queue.select_messages, where="m.id = ?", params=(message_id,), limit=1
            ),
            snapshot=True,
        )
        return found[0] if found else None

    async def messages(self, *, limit: int = 100, after: str | None = None) -> list[StoredMessage]:
        if limit <= 0:
            return []
        return await self._read(
            functools.partial(
                queue.select_messages, where="m.id > ?", params=(after or "",), limit=limit
            ),
            snapshot=True,
        )

    async def read_heads(self, ids: Sequence[str], size: int) -> dict[str, bytes]:
        if not ids or size <= 0:
            return {}
        return await self._read(functools.partial(queue.read_heads, list(ids), size))

    async def read_body(self, message_id: str) -> bytes | None:
        return await self._read(functools.partial(queue.read_body, message_id))

    async def instance_id(self) -> str:
        found: str = await self._read(
            lambda conn: conn.execute("SELECT min(id) FROM instance").fetchone()[0]
        )
        return found

    async def count_messages(self) -> int:
        count: int = await self._read(
            lambda conn: conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        )
        return count

    # -- delivery: DeliveryOps; the email log ---------------------------------------------
    async def query(self, query: LogQuery) -> list[StoredMessage]:
        check_query(query)
        if query.limit <= 0:
            return []
        return await self._read(functools.partial(log.query, query), snapshot=True)

    async def newest_before(self, cursor: str | None, count: int) -> str | None:
        if count <= 0:
            raise ValueError("count must be positive")
        return await self._read(functools.partial(log.newest_before, cursor, count))

    async def attempts(self, message_id: str) -> list[Attempt]:
        return await self._read(functools.partial(delivery.attempts_of, message_id))

    async def record_provider_event(self, event: ProviderEventRecord) -> str | None:
        return await self._write(providers.record_job(event))

    async def provider_events(self, message_id: str) -> list[ProviderEventRecord]:
        return await self._read(functools.partial(providers.events_of, message_id))

    async def mailer_health(self, since: float) -> list[MailerHealth]:
        return await self._read(functools.partial(health.mailer_health, since))

    async def queue_summary(self) -> QueueSummary:
        return await self._read(health.queue_summary, snapshot=True)

    async def merge_counters(self) -> int:
        return 0  # one writer: its triggers keep one row per count

    async def attempt_counts(self, since: float, bucket: float) -> list[AttemptCount]:
        rollup_params(since, bucket)  # ValueError for a bucket the rollups cannot give
        return await self._read(functools.partial(health.attempt_counts, since, bucket))

    async def recent_failures(self, limit: int) -> list[Attempt]:
        return await self._read(functools.partial(health.recent_failures, limit))

    async def attempt_totals(self, since: float, until: float, *, reasons: int) -> AttemptTotals:
        return await self._read(
            functools.partial(health.attempt_totals, since, until, reasons), snapshot=True
        )

    # -- the directory ----------------------------------------------------------------
    async def add_domain(self, name: str, now: float) -> bool:
        return await self._write(
            functools.partial(directory.changed, directory.ADD_DOMAIN, (name, now))
        )

    async def remove_domain(self, name: str) -> bool:
        return await self._write(
            functools.partial(directory.changed, directory.REMOVE_DOMAIN, (name,))
        )

    async def domains(self) -> list[str]:
        return await self._read(directory.domains)

    async def is_local_domain(self, name: str) -> bool:
        return await self._lookup(
            functools.partial(directory.exists, directory.IS_LOCAL_DOMAIN, (name,))
        )

    async def recipient(self, domain: str, address: str) -> tuple[bool, bool]:
        return await self._lookup(functools.partial(directory.recipient, domain, address))

    async def add_user(self, user: UserRecord) -> bool:
        params = user_params(user)
        return await self._write(functools.partial(directory.changed, directory.ADD_USER, params))

    async def user(self, address: str) -> UserRecord | None:
        # Inline, as RCPT's lookup: every login reads the record (the login cache is
        # checked against its current hash).
        return await self._lookup(functools.partial(directory.user, address))

    async def users(self) -> list[UserRecord]:
        return await self._read(directory.users)

    async def set_password(self, address: str, password_hash: str) -> bool:
        params = (password_hash, address)
        return await self._write(
            functools.partial(directory.changed, directory.SET_PASSWORD, params)
        )

    async def set_user_senders(
        self, address: str, sender_domains: Sequence[str], any_sender: bool
    ) -> bool:
        params = (",".join(sender_domains), int(any_sender), address)
        return await self._write(
            functools.partial(directory.changed, directory.SET_USER_SENDERS, params)
        )

    async def remove_user(self, address: str) -> bool:
        return await self._write(
            functools.partial(directory.changed, directory.REMOVE_USER, (address,))
        )

    # -- the HTTP API -----------------------------------------------------------------
    async def add_api_key(self, record: ApiKeyRecord) -> bool:
        params = api_key_params(record)
        return await self._write(functools.partial(directory.changed, api.ADD_API_KEY, params))

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self._read(functools.partial(api.api_key, key_id))

    async def api_keys(self) -> list[ApiKeyRecord]:
        return await self._read(api.api_keys)

    async def remove_api_key(self, name: str) -> bool:
        return await self._write(functools.partial(directory.changed, api.REMOVE_API_KEY, (name,)))

    async def set_api_key_senders(
        self, name: str, sender_domains: Sequence[str], any_sender: bool
    ) -> bool:
        params = (",".join(sender_domains), int(any_sender), name)
        return await self._write(
            functools.partial(directory.changed, api.SET_API_KEY_SENDERS, params)
        )

    async def save_send(
        self, meta: MessageMeta, answer: IdempotencyRecord | None, *, forget_before: float
    ) -> None:
        await self._write(api.save_send_job(meta, answer, forget_before))

    async def message_meta(self, ids: Sequence[str]) -> dict[str, MessageMeta]:
        if not ids:
            return {}
        return await self._read(functools.partial(api.message_meta, list(ids)))

    async def idempotent(self, key_name: str, key: str, since: float) -> IdempotencyRecord | None:
        return await self._read(functools.partial(api.idempotent, key_name, key, since))
