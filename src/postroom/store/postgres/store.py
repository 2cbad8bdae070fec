"""PostgresStore: the engine for many nodes on one PostgreSQL database.

Writes go through a ``GroupCommitter`` as on SQLite: one writer thread per node owns a
connection and commits each batch of concurrent jobs in one transaction, one durable
commit (``synchronous_commit = on``) for many messages. Reads run on a small pool of
reader threads, each with a connection of its own (``Readers``); a read is one
REPEATABLE READ, read-only transaction, so a message and its recipients come from one
moment. A lost database fails writes and reads at once, never makes them wait, and
each connects again on its next use. Many nodes write at once: claims lock the rows they lease with
``FOR UPDATE SKIP LOCKED`` (see ``delivery``), and a lock another node holds is waited
for ``busy_timeout`` at most (``lock_timeout``), then the job fails as unavailable.

The SQL lives beside this class: ``queue``, ``delivery``, ``log``, ``directory``; the
shared limits run on a connection of their own (``limits``).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import psycopg

from postroom.errors import StoreUnavailable
from postroom.store import outbox
from postroom.store.admins import POSTGRES, AdminOps
from postroom.store.deliveryops import DeliveryOps
from postroom.store.eventops import EventOps
from postroom.store.groupcommit import DEFAULT_MAX_BYTES, DEFAULT_MAX_JOBS, GroupCommitter, Merge
from postroom.store.limitops import LimitOps, Sql
from postroom.store.models import (
    DEFAULT_INLINE_BODY_MAX,
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
    StoredMessage,
    UserRecord,
)
from postroom.store.postgres import delivery, directory, log, queue
from postroom.store.postgres.connection import Conn, Link, Readers, Writer, store_error
from postroom.store.postgres.dircache import DIRECTORY_CHANNEL, DirectoryCache
from postroom.store.postgres.guard import DEFAULT_TIMEOUT, Guard
from postroom.store.postgres.limits import LimitLink
from postroom.store.postgres.notices import Notices
from postroom.store.postgres.schema import SCHEMA_VERSION
from postroom.store.rows import (
    api_key_params,
    check_query,
    rollup_params,
    user_params,
)

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

R = TypeVar("R")


class _OnLink(Generic[R]):
    """A job of the connection, run on the writer's Link (whose connection may change)."""

    __slots__ = ("job",)

    def __init__(self, job: Callable[[Conn], R]) -> None:
        self.job = job

    def __call__(self, link: Link) -> R:
        return self.job(link.conn)


def _on_link(merge: Merge[Conn, R]) -> Merge[Link, R]:
    def on_link(link: Link, jobs: list[Callable[[Link], R]]) -> list[R]:
        return merge(link.conn, [job.job for job in jobs if isinstance(job, _OnLink)])

    return on_link


# One function for every enqueue, and one for every outcome: the GroupCommitter merges
# neighbours sharing it.
_ENQUEUE_TOGETHER = _on_link(queue.enqueue_together)
_RECORD_TOGETHER = _on_link(delivery.record_together)


class PostgresStore(DeliveryOps[Conn], EventOps, LimitOps, AdminOps):
    """The ``Store`` on a PostgreSQL database named by a libpq URL.

    ``await start()`` before use (it creates the schema in an empty database, and upgrades
    an older one when ``upgrade``), ``aclose()`` after. A body above ``inline_body_max``
    bytes is stored as a large object (``queue``).
    """

    _delivery = delivery
    _dialect = outbox.POSTGRES
    _admin_sql = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 5.0,
        timeout: float = DEFAULT_TIMEOUT,
        upgrade: bool = True,
        readers: int = 2,
        max_batch_jobs: int = DEFAULT_MAX_JOBS,
        max_batch_bytes: int = DEFAULT_MAX_BYTES,
        inline_body_max: int = DEFAULT_INLINE_BODY_MAX,
    ) -> None:
        self.url = url
        self.inline_body_max = inline_body_max
        self._guard = guard = Guard(timeout)
        # A lock is waited for well within the call's deadline: a call that runs out of
        # time is taken for a database that does not answer.
        lock_timeout = min(busy_timeout, timeout / 2)
        self.committer: GroupCommitter[Link] = GroupCommitter(
            Writer(url, lock_timeout, upgrade=upgrade, guard=guard),
            max_jobs=max_batch_jobs,
            max_bytes=max_batch_bytes,
        )
        self._connections = Readers(url, lock_timeout, guard)
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="postroom-reader")
        self._limits = LimitLink(url, lock_timeout=lock_timeout, guard=guard)
        # One listening connection for the queue's wake-ups and the directory's changes;
        # RCPT's answers are kept exact by the latter (``dircache``).
        self.notices = Notices(url, timeout, (queue.QUEUE_CHANNEL, DIRECTORY_CHANNEL))
        self.directory_cache = DirectoryCache(self.notices)
        self._closed = False

    # -- life cycle -------------------------------------------------------------------
    async def start(self) -> None:
        try:
            await self.committer.start()
        except BaseException as exc:
            await self.aclose()
            if isinstance(exc, psycopg.Error | OSError):
                raise store_error(exc) from exc
            raise

    async def aclose(self) -> None:
        self._closed = True
        await self.notices.aclose()
        await self.committer.aclose()
        await self._limits.aclose()
        await asyncio.to_thread(self._readers.shutdown)
        self._connections.close()
        await asyncio.to_thread(self._guard.close)

    async def _read(self, fn: Callable[[Conn], R], *, snapshot: bool = True) -> R:
        """Run ``fn`` on a reader, in one snapshot; without ``snapshot``, ``fn`` must run
        one statement (it runs alone: one round trip)."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        read = functools.partial(self._connections.read, fn, snapshot)
        try:
            return await loop.run_in_executor(self._readers, read)
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    async def _write(
        self, job: Callable[[Conn], R], weight: int = 0, *, merge: Merge[Link, R] | None = None
    ) -> R:
        try:
            return await self.committer.submit(_OnLink(job), weight, merge=merge)
        except (psycopg.Error, OSError) as exc:  # OSError: reading the spool file
            raise store_error(exc) from exc

    async def _read_consistent(self, fn: Callable[[Conn], R]) -> R:
        return await self._read(fn)  # every read here is one REPEATABLE READ snapshot

    async def _limit_tx(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        return await self._limits.run(keys, job)

    async def watch_queue(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` whenever any node commits mail or makes mail due (their
        commits NOTIFY ``QUEUE_CHANNEL``), until cancelled. Once listening it calls
        ``on_change`` once, for what was committed before. A lost connection raises
        StoreUnavailable: the caller's supervisor starts it again."""
        watch = _QueueWatch(on_change, asyncio.get_running_loop().create_future())
        unsubscribe = self.notices.subscribe(watch)
        try:
            exc = await watch.ended
        finally:
            unsubscribe()
        if isinstance(exc, psycopg.Error | OSError):
            raise store_error(exc) from exc
        if isinstance(exc, StoreUnavailable):
            raise exc
        raise StoreUnavailable(f"not listening: {exc}") from exc

    async def instance_id(self) -> str:
        def read(conn: Conn) -> str:
            row = conn.execute("SELECT min(id) FROM instance").fetchone()
            assert row is not None
            found: str = row[0]
            return found

        return await self._read(read, snapshot=False)

    # -- the queue --------------------------------------------------------------------
    async def enqueue(self, message: NewMessage) -> None:
        job = queue.Enqueue(message, self.inline_body_max)
        await self._write(job, message.size, merge=_ENQUEUE_TOGETHER)

    async def message(self, message_id: str) -> StoredMessage | None:
        found = await self._read(
            functools.partial(
                queue.select_messages, where="m.id = %s", params=(message_id,), limit=1
            )
        )
        return found[0] if found else None

    async def messages(self, *, limit: int = 100, after: str | None = None) -> list[StoredMessage]:
        if limit <= 0:
            return []
        return await self._read(
            functools.partial(
                queue.select_messages, where="m.id > %s", params=(after or "",), limit=limit
            )
        )

    async def read_heads(self, ids: Sequence[str], size: int) -> dict[str, bytes]:
        if not ids or size <= 0:
            return {}
        return await self._read(
            functools.partial(queue.read_heads, list(ids), size), snapshot=False
        )

    async def read_body(self, message_id: str) -> bytes | None:
        return await self._read(functools.partial(queue.read_body, message_id), snapshot=False)

    async def count_messages(self) -> int:
        def count(conn: Conn) -> int:
            row = conn.execute("SELECT count(*) FROM messages").fetchone()
            assert row is not None
            found: int = row[0]
            return found

        return await self._read(count, snapshot=False)

    # -- delivery: DeliveryOps; the email log ---------------------------------------------
    async def query(self, query: LogQuery) -> list[StoredMessage]:
        check_query(query)
        if query.limit <= 0:
            return []
        return await self._read(functools.partial(log.query, query))

    async def newest_before(self, cursor: str | None, count: int) -> str | None:
        if count <= 0:
            raise ValueError("count must be positive")
        return await self._read(functools.partial(log.newest_before, cursor, count))

    async def attempts(self, message_id: str) -> list[Attempt]:
        return await self._read(functools.partial(delivery.attempts_of, message_id))

    async def record_provider_event(self, event: ProviderEventRecord) -> str | None:
        return await self._write(log.record_event_job(event))

    async def provider_events(self, message_id: str) -> list[ProviderEventRecord]:
        return await self._read(functools.partial(log.events_of, message_id))

    async def mailer_health(self, since: float) -> list[MailerHealth]:
        return await self._read(functools.partial(log.mailer_health, since))

    async def attempt_counts(self, since: float, bucket: float) -> list[AttemptCount]:
        rollup_params(since, bucket)  # ValueError for a bucket the rollups cannot give
        return await self._read(functools.partial(log.attempt_counts, since, bucket))

    async def recent_failures(self, limit: int) -> list[Attempt]:
        return await self._read(functools.partial(delivery.recent_failures, limit))

    async def attempt_totals(self, since: float, until: float, *, reasons: int) -> AttemptTotals:
        return await self._read(functools.partial(log.attempt_totals, since, until, reasons))

    async def _record(self, job: Callable[[Conn], Any]) -> None:
        await self._write(job, merge=_RECORD_TOGETHER)

    async def queue_summary(self) -> QueueSummary:
        return await self._read(delivery.queue_summary)

    async def merge_counters(self) -> int:
        return await self._write(delivery.merge_counters_job)

    # -- the directory ----------------------------------------------------------------
    async def _changed(self, sql: str, params: tuple[Any, ...]) -> bool:
        return await self._write(functools.partial(directory.changed, sql, params))

    async def add_domain(self, name: str, now: float) -> bool:
        return await self._changed(directory.ADD_DOMAIN, (name, now))

    async def remove_domain(self, name: str) -> bool:
        return await self._changed(directory.REMOVE_DOMAIN, (name,))

    async def domains(self) -> list[str]:
        return await self._read(directory.domains, snapshot=False)

    async def is_local_domain(self, name: str) -> bool:
        local, _ = await self.recipient(name, "")  # no user has an empty address
        return local

    async def recipient(self, domain: str, address: str) -> tuple[bool, bool]:
        cache = self.directory_cache
        found = cache.get(domain, address)
        if found is not None:
            return found
        since = cache.generation
        answer = await self._read(
            functools.partial(directory.recipient, domain, address), snapshot=False
        )
        cache.keep(domain, address, answer, since)
        return answer

    async def add_user(self, user: UserRecord) -> bool:
        params = user_params(user)
        return await self._changed(directory.ADD_USER, params)

    async def user(self, address: str) -> UserRecord | None:
        return await self._read(functools.partial(directory.user, address), snapshot=False)

    async def users(self) -> list[UserRecord]:
        return await self._read(directory.users, snapshot=False)

    async def set_password(self, address: str, password_hash: str) -> bool:
        return await self._changed(directory.SET_PASSWORD, (password_hash, address))

    async def set_user_senders(
        self, address: str, sender_domains: Sequence[str], any_sender: bool
    ) -> bool:
        params = (",".join(sender_domains), any_sender, address)
        return await self._changed(directory.SET_USER_SENDERS, params)

    async def remove_user(self, address: str) -> bool:
        return await self._changed(directory.REMOVE_USER, (address,))

    # -- the HTTP API -----------------------------------------------------------------
    async def add_api_key(self, record: ApiKeyRecord) -> bool:
        params = api_key_params(record)
        return await self._changed(directory.ADD_API_KEY, params)

    async def api_key(self, key_id: str) -> ApiKeyRecord | None:
        return await self._read(functools.partial(directory.api_key, key_id), snapshot=False)

    async def api_keys(self) -> list[ApiKeyRecord]:
        return await self._read(directory.api_keys, snapshot=False)

    async def remove_api_key(self, name: str) -> bool:
        return await self._changed(directory.REMOVE_API_KEY, (name,))

    async def set_api_key_senders(
        self, name: str, sender_domains: Sequence[str], any_sender: bool
    ) -> bool:
        params = (",".join(sender_domains), any_sender, name)
        return await self._changed(directory.SET_API_KEY_SENDERS, params)

    async def save_send(
        self, meta: MessageMeta, answer: IdempotencyRecord | None, *, forget_before: float
    ) -> None:
        await self._write(directory.save_send_job(meta, answer, forget_before))

    async def message_meta(self, ids: Sequence[str]) -> dict[str, MessageMeta]:
        if not ids:
            return {}
        return await self._read(
            functools.partial(directory.message_meta, list(ids)), snapshot=False
        )

    async def idempotent(self, key_name: str, key: str, since: float) -> IdempotencyRecord | None:
        return await self._read(
            functools.partial(directory.idempotent, key_name, key, since), snapshot=False
        )


class _QueueWatch:
    """``watch_queue``'s subscriber: wakes the scheduler on each queue notification (and
    each time listening starts), and ends at the first loss."""

    def __init__(self, on_change: Callable[[], None], ended: asyncio.Future[Exception]) -> None:
        self._on_change = on_change
        self.ended = ended

    def on_listening(self) -> None:
        self._on_change()

    def on_notify(self, channel: str) -> None:
        if channel == queue.QUEUE_CHANNEL:
            self._on_change()

    def on_lost(self, exc: Exception) -> None:
        if not self.ended.done():
            self.ended.set_result(exc)
