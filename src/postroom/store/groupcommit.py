"""Group commit: many concurrent writers share one transaction and one durable commit.

    await committer.submit(job) ─┐
    await committer.submit(job) ─┼─> queue ─> writer thread: BEGIN; job(conn) ...; COMMIT
    await committer.submit(job) ─┘                           └─> every awaiter resolved

Jobs submitted during one event-loop iteration are handed to the writer together. The
writer takes everything queued (up to ``max_jobs`` jobs or ``max_bytes`` of declared
weight) as one batch, so one commit, and one fsync, covers the whole batch; while it
commits, the next batch gathers. No timer: a lone job commits at once, and batches grow
by themselves under load.

If the batch fails, it is rolled back and each job is retried alone in its own
transaction, so a bad job fails only its own awaiter. A job must therefore be safe to
run again after a rollback: it may change nothing outside the transaction. A batch
whose connection turns out to be lost before its commit was sent (the server restarted
while the writer was idle, say) committed nothing: it runs once more, whole, on the new
connection ``begin`` makes, so no client is failed by a connection nobody knew was dead.

Jobs of one kind may run as one: a job submitted with a ``merge`` function runs, with
the jobs next to it in the batch that share that function, as one call
``merge(conn, jobs)`` (one multi-row statement for many messages, say). Alone, or
retried after a failed batch, each job runs by itself.

Engine-neutral: the engine supplies a ``Transactor`` (connect, begin, commit, rollback,
close), and jobs are plain functions of the connection, all run on the writer thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from postroom.errors import StoreUnavailable

__all__ = ["GroupCommitter", "Transactor"]

C = TypeVar("C")
R = TypeVar("R")

DEFAULT_MAX_JOBS = 512
DEFAULT_MAX_BYTES = 8 << 20

# (future, result, exception) for one job, set on the future's own loop.
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
# Runs several jobs of one kind together; returns each one's result, in order.
Merge = Callable[[C, list[Callable[[C], R]]], list[R]]


class Transactor(Protocol[C]):
    """The engine's side of group commit; every method runs on the writer thread."""

    def connect(self) -> C: ...

    def begin(self, conn: C) -> None: ...

    def commit(self, conn: C) -> None: ...

    def rollback(self, conn: C) -> None: ...

    def lost(self, conn: C) -> bool:
        """True when ``conn`` is found dead: a transaction that failed on it before its
        commit was sent committed nothing, and the next ``begin`` connects anew."""
        ...

    def close(self, conn: C) -> None: ...


class _Item:
    __slots__ = ("future", "job", "merge", "weight")

    def __init__(
        self,
        job: Callable[[Any], Any],
        weight: int,
        future: asyncio.Future[Any],
        merge: Merge[Any, Any] | None,
    ) -> None:
        self.job = job
        self.weight = weight
        self.future = future
        self.merge = merge


class GroupCommitter(Generic[C]):
    """One writer thread with one connection; ``submit`` from any event loop."""

    def __init__(
        self,
        transactor: Transactor[C],
        *,
        max_jobs: int = DEFAULT_MAX_JOBS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        name: str = "postroom-writer",
    ) -> None:
        self._transactor = transactor
        self._max_jobs = max_jobs
        self._max_bytes = max_bytes
        # Jobs submitted during one loop iteration, handed over together at its end.
        self._pending: dict[asyncio.AbstractEventLoop, list[_Item]] = {}
        self._queue: queue.SimpleQueue[list[_Item] | None] = queue.SimpleQueue()
        self._backlog: deque[_Item] = deque()  # the writer's own: received, not yet run
        self._lock = threading.Lock()  # orders hand-overs against the writer's exit
        self._stopping = False
        self._stopped = False
        # Daemon: a store nobody closed must not keep the process alive; an interrupted
        # transaction is rolled back by the engine on the next open.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._ready = threading.Event()
        self._connect_error: BaseException | None = None
        self._open = False
        self._commits = 0
        self._jobs = 0
        self._fallbacks = 0

    # -- counters (read from any thread) --------------------------------------------
    @property
    def commits(self) -> int:
        """Transactions committed so far."""
        return self._commits

    @property
    def jobs(self) -> int:
        """Jobs finished so far, committed or failed."""
        return self._jobs

    @property
    def fallbacks(self) -> int:
        """Batches that failed and were retried job by job."""
        return self._fallbacks

    # -- life cycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Start the writer thread and connect; raises what ``connect`` raised."""
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        if self._connect_error is not None:
            await asyncio.to_thread(self._thread.join)
            raise self._connect_error
        self._open = True

    async def aclose(self) -> None:
        """Refuse new jobs, finish every job already submitted, then close."""
        if not self._thread.is_alive():
            return
        self._open = False
        self._hand_over(asyncio.get_running_loop())  # submitted jobs go before the stop
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    # -- submitting -------------------------------------------------------------------
    async def submit(
        self, job: Callable[[C], R], weight: int = 0, *, merge: Merge[C, R] | None = None
    ) -> R:
        """Run ``job(conn)`` in the next batch; return its result once committed.

        ``weight`` (bytes, say) bounds a batch together with the job count. ``merge``: run
        with its neighbours in the batch that have the same ``merge``, as one call. Cancelling
        the caller does not cancel the job, and ``submit`` returns only after the job
        has run, because jobs may read buffers the caller frees when it returns.
        """
        future = self.submit_soon(job, weight, merge=merge)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            while not future.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait((future,))
            if not future.cancelled():
                future.exception()  # retrieved, so it is not reported as lost
            raise

    def submit_soon(
        self, job: Callable[[C], R], weight: int = 0, *, merge: Merge[C, R] | None = None
    ) -> asyncio.Future[R]:
        """``submit`` without a coroutine: the future ``job``'s result is set on once
        committed, for a caller that answers from a callback (no task to wake, so no turn
        of the event loop spent on it). Never cancel it: the job runs regardless."""
        if not self._open:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        pending = self._pending.get(loop)
        if pending is None:
            # One hand-over per loop iteration, not per job: the writer wakes once and
            # sees every job that the sessions woken by the last commit submitted.
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_over, loop)
        pending.append(_Item(job, weight, future, merge))
        return future

    def _hand_over(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._pending.pop(loop, None)
        if not items:
            return
        with self._lock:
            if not self._stopped:
                self._queue.put(items)
                return
        for item in items:  # the writer is gone: a rare race with aclose from another loop
            item.future.set_exception(StoreUnavailable("the store is closed"))

    # -- the writer thread ------------------------------------------------------------
    def _run(self) -> None:
        try:
            conn = self._transactor.connect()
        except BaseException as exc:
            self._connect_error = exc
            self._stopped = True
            self._ready.set()
            return
        self._ready.set()
        try:
            while (batch := self._take()) is not None:
                self._run_batch(conn, batch)
        finally:
            self._transactor.close(conn)

    def _receive(self, items: list[_Item] | None) -> None:
        if items is None:
            self._stopping = True
        else:
            self._backlog.extend(items)

    def _drain(self) -> None:
        get = self._queue.get_nowait
        while True:
            try:
                self._receive(get())
            except queue.Empty:
                return

    def _take(self) -> list[_Item] | None:
        """The next batch, within the limits; None once stopped and all is done."""
        backlog = self._backlog
        if not backlog and not self._stopping:
            self._receive(self._queue.get())
        self._drain()
        if not backlog:
            with self._lock:
                self._drain()  # a hand-over may have raced the stop mark
                if not backlog:
                    self._stopped = True
                    return None
        first = backlog.popleft()
        batch = [first]
        weight = first.weight
        # Weigh before taking: a big body starts the next batch, so the small messages
        # ahead of it need not wait while it is written.
        while backlog and len(batch) < self._max_jobs:
            if weight + backlog[0].weight > self._max_bytes:
                break
            item = backlog.popleft()
            batch.append(item)
            weight += item.weight
        return batch

    def _run_batch(self, conn: C, batch: list[_Item]) -> None:
        transactor = self._transactor
        for again in (True, False):
            try:
                transactor.begin(conn)
            except Exception as exc:
                # No retry: a failed BEGIN (lock wait exhausted) would fail each job again.
                self._settle([(item.future, None, exc) for item in batch])
                return
            try:
                results = _run_jobs(conn, batch)
            except Exception as exc:
                self._rollback(conn)
                if again and transactor.lost(conn):
                    continue  # nothing was committed: the whole batch once more
                failure = exc
                break
            try:
                transactor.commit(conn)
            except Exception as exc:
                self._rollback(conn)
                failure = exc
                break
            self._commits += 1
            self._settle(
                [(item.future, result, None) for item, result in zip(batch, results, strict=True)]
            )
            return
        if len(batch) == 1:
            self._settle([(batch[0].future, None, failure)])
            return
        self._fallbacks += 1
        for item in batch:
            self._settle([self._run_alone(conn, item)])

    def _run_alone(self, conn: C, item: _Item) -> _Outcome:
        try:
            self._transactor.begin(conn)
            result = item.job(conn)
            self._transactor.commit(conn)
        except Exception as exc:
            self._rollback(conn)
            return (item.future, None, exc)
        self._commits += 1
        return (item.future, result, None)

    def _rollback(self, conn: C) -> None:
        with contextlib.suppress(Exception):  # the engine may have rolled back already
            self._transactor.rollback(conn)

    def _settle(self, outcomes: list[_Outcome]) -> None:
        """Hand the outcomes to their loops: one wake-up per loop, not per job."""
        self._jobs += len(outcomes)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop has no awaiters
                loop.call_soon_threadsafe(_resolve, items)


def _run_jobs(conn: Any, batch: list[_Item]) -> list[Any]:
    """Every job's result in order; neighbours sharing a ``merge`` run as one call."""
    results: list[Any] = []
    start = 0
    while start < len(batch):
        merge = batch[start].merge
        end = start + 1
        while merge is not None and end < len(batch) and batch[end].merge is merge:
            end += 1
        if end - start == 1 or merge is None:
            results.append(batch[start].job(conn))
        else:
            jobs = [item.job for item in batch[start:end]]
            merged = merge(conn, jobs)
            if len(merged) != len(jobs):
                raise AssertionError("a merge must return one result per job")
            results.extend(merged)
        start = end
    return results


def _resolve(outcomes: list[_Outcome]) -> None:
    for future, result, exc in outcomes:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
