"""The shared limits (``LimitStore``) once for both engines.

Each call is one transaction that the engine serialises against every other process
touching the same keys (SQLite: ``BEGIN IMMEDIATE`` on its limits file; PostgreSQL: an
advisory lock per key), so a read-then-write here is atomic across nodes. The
statements use ``?`` placeholders; an engine's ``Sql`` adapts them. An engine mixes
``LimitOps`` in and writes ``_limit_tx``.

The tables (the same on both engines):

- ``limit_windows``: one row per fixed window, the span it counts (``ends_at``) and
  how many it counted; a new span overwrites the row.
- ``limit_buckets``: one row per token bucket, its tokens at ``at``.
- ``limit_hits``: one row per hit of a sliding window, kept until ``expires``.
- ``limit_slots``: one row per key and holder, how many slots it holds until ``until``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from postroom.errors import StoreError, StoreUnavailable
from postroom.store.models import Window

__all__ = ["TABLES", "WAITING_MARK", "LimitOps", "LimitRunner", "Sql"]

R = TypeVar("R")
# Run one statement with ``?`` placeholders in the call's transaction; its rows.
Sql = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]

TABLES = ("limit_windows", "limit_buckets", "limit_hits", "limit_slots")
# Every this many hits, the hits of every key whose window has passed are removed (a
# key's own are removed whenever it is counted).
_SWEEP_EVERY = 256
# How long a refused take marks its holder as waiting for a slot (a waiting holder asks
# again every quarter second or so, and each refusal marks it again).
WAITING_MARK = 1.0
_WAITS = " waits"  # a waiting holder's mark: a row of its own, holding nothing


class LimitOps:
    """``LimitStore`` on an engine's ``_limit_tx``."""

    _hits_since_sweep = 0

    async def _limit_tx(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        """Run ``job`` in one transaction that holds ``keys`` against other processes."""
        raise NotImplementedError

    async def _limit_read(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        """Run ``job``, one statement that only reads; an engine may answer it without
        holding ``keys`` (a single statement sees one moment anyway)."""
        return await self._limit_tx(keys, job)

    async def take_windows(self, windows: Sequence[Window], now: float) -> float | None:
        if not windows:
            return None
        keys = [w.key for w in windows]
        return await self._limit_tx(
            keys, functools.partial(_take_windows, windows=windows, now=now)
        )

    async def window_usage(self, windows: Sequence[Window], now: float) -> list[int]:
        if not windows:
            return []
        keys = [w.key for w in windows]
        counts = await self._limit_tx(keys, functools.partial(_counts, windows=windows, now=now))
        return counts

    async def take_token(self, key: str, now: float, *, per_second: float, burst: int) -> float:
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        job = functools.partial(_take_token, key=key, now=now, rate=per_second, burst=burst)
        return await self._limit_tx([key], job)

    async def add_hit(
        self, limits: Sequence[tuple[str, int]], tag: str, now: float, *, window: float
    ) -> bool:
        self._hits_since_sweep += 1
        sweep = self._hits_since_sweep >= _SWEEP_EVERY
        if sweep:
            self._hits_since_sweep = 0
        job = functools.partial(
            _add_hit, limits=limits, tag=tag, now=now, window=window, sweep=sweep
        )
        return await self._limit_tx([key for key, _ in limits], job)

    async def forget_hits(self, keys: Sequence[str], tag: str) -> None:
        await self._limit_tx(keys, functools.partial(_forget_hits, keys=keys, tag=tag))

    async def hits_below(
        self, limits: Sequence[tuple[str, int]], now: float, *, window: float
    ) -> bool:
        job = functools.partial(_hits_below, limits=limits, now=now, window=window)
        return await self._limit_read([key for key, _ in limits], job)

    async def take_slot(
        self, key: str, limit: int, holder: str, now: float, *, lease: float
    ) -> bool:
        if lease <= 0:
            raise ValueError("lease must be positive")
        job = functools.partial(
            _take_slot, key=key, limit=limit, holder=holder, now=now, lease=lease
        )
        return await self._limit_tx([key], job)

    async def slot_contenders(self, holder: str, now: float) -> dict[str, int]:
        job = functools.partial(_slot_contenders, holder=holder, now=now)
        return await self._limit_read([], job)

    async def renew_slots(self, holder: str, now: float, *, lease: float) -> int:
        if lease <= 0:
            raise ValueError("lease must be positive")
        # One statement on the holder's own rows: no key to hold against others.
        return await self._limit_tx(
            [], functools.partial(_renew_slots, holder=holder, now=now, lease=lease)
        )

    async def release_slot(self, key: str, holder: str) -> None:
        await self._limit_tx([key], functools.partial(_release_slot, key=key, holder=holder))

    async def slot_holders(self, now: float) -> list[str]:
        return await self._limit_read([], functools.partial(_slot_holders, now=now))

    async def drop_slot_holder(self, holder: str) -> int:
        return await self._limit_tx([], functools.partial(_drop_slot_holder, holder=holder))


class LimitRunner:
    """Runs an engine's limit calls one at a time on a thread of their own, on one
    connection (``_run``): a call may wait for another process's lock, never on the
    event loop. An engine writes ``_run``, ``_close`` and which errors are its own."""

    _errors: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="postroom-limits")
        self._closed = False

    def _run(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        raise NotImplementedError

    def _error(self, exc: Exception) -> StoreError:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    async def run(self, keys: Sequence[str], job: Callable[[Sql], R]) -> R:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, self._run, keys, job)
        except self._errors as exc:
            raise self._error(exc) from exc

    async def aclose(self) -> None:
        self._closed = True
        await asyncio.to_thread(self._thread.shutdown)
        self._close()


def _counts(sql: Sql, *, windows: Sequence[Window], now: float) -> list[int]:
    marks = ", ".join("?" for _ in windows)
    rows = sql(
        f"SELECT key, ends_at, used FROM limit_windows WHERE key IN ({marks})",
        tuple(w.key for w in windows),
    )
    found = {key: (ends_at, used) for key, ends_at, used in rows}
    counts = []
    for window in windows:
        ends_at, used = found.get(window.key, (None, 0))
        counts.append(used if ends_at == window.ends_at(now) else 0)
    return counts


def _take_windows(sql: Sql, *, windows: Sequence[Window], now: float) -> float | None:
    counts = _counts(sql, windows=windows, now=now)
    full = [w.ends_at(now) for w, used in zip(windows, counts, strict=True) if used >= w.limit]
    if full:
        return max(full)
    for window, used in zip(windows, counts, strict=True):
        sql(
            "INSERT INTO limit_windows (key, ends_at, used) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET ends_at = excluded.ends_at, used = excluded.used",
            (window.key, window.ends_at(now), used + 1),
        )
    return None


def _take_token(sql: Sql, *, key: str, now: float, rate: float, burst: int) -> float:
    rows = sql("SELECT tokens, at FROM limit_buckets WHERE key = ?", (key,))
    tokens = float(burst)
    if rows:
        held, at = rows[0]
        tokens = min(tokens, held + max(0.0, now - at) * rate)
    wait = 0.0
    if tokens >= 1:
        tokens -= 1
    else:
        wait = (1 - tokens) / rate
    sql(
        "INSERT INTO limit_buckets (key, tokens, at) VALUES (?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
        (key, tokens, now),
    )
    return wait


def _add_hit(
    sql: Sql,
    *,
    limits: Sequence[tuple[str, int]],
    tag: str,
    now: float,
    window: float,
    sweep: bool,
) -> bool:
    if sweep:
        sql("DELETE FROM limit_hits WHERE expires <= ?", (now,))
    keys = tuple(key for key, _ in limits)
    marks = ", ".join("?" for _ in keys)
    sql(f"DELETE FROM limit_hits WHERE key IN ({marks}) AND at <= ?", (*keys, now - window))
    rows = sql(f"SELECT key, count(*) FROM limit_hits WHERE key IN ({marks}) GROUP BY key", keys)
    counts: dict[str, int] = dict(rows)
    if any(counts.get(key, 0) >= limit for key, limit in limits):
        return False
    for key, _ in limits:
        sql(
            "INSERT INTO limit_hits (key, tag, at, expires) VALUES (?, ?, ?, ?)",
            (key, tag, now, now + window),
        )
    return True


def _hits_below(sql: Sql, *, limits: Sequence[tuple[str, int]], now: float, window: float) -> bool:
    keys = tuple(key for key, _ in limits)
    marks = ", ".join("?" for _ in keys)
    rows = sql(
        f"SELECT key, count(*) FROM limit_hits WHERE key IN ({marks}) AND at > ? GROUP BY key",
        (*keys, now - window),
    )
    counts: dict[str, int] = dict(rows)
    return all(counts.get(key, 0) < limit for key, limit in limits)


def _forget_hits(sql: Sql, *, keys: Sequence[str], tag: str) -> None:
    marks = ", ".join("?" for _ in keys)
    sql(f"DELETE FROM limit_hits WHERE tag = ? AND key IN ({marks})", (tag, *keys))


def _take_slot(sql: Sql, *, key: str, limit: int, holder: str, now: float, lease: float) -> bool:
    sql("DELETE FROM limit_slots WHERE key = ? AND until <= ?", (key, now))
    holding, waiting = _slot_rows(sql("SELECT holder, held FROM limit_slots WHERE key = ?", (key,)))
    held, mine = sum(holding.values()), holding.get(holder, 0)
    share = -(-limit // len({*holding, *waiting, holder}))
    if held >= limit or (waiting - {holder} and mine >= share):
        # Marked as waiting for a moment (each refused take marks it again), so those
        # above their share see it (slot_contenders) and give slots back.
        sql(
            "INSERT INTO limit_slots (key, holder, held, until) VALUES (?, ?, 0, ?)"
            " ON CONFLICT (key, holder) DO UPDATE SET until = excluded.until",
            (key, holder + _WAITS, now + WAITING_MARK),
        )
        return False
    # A holder's slots of one key are one row with one end: the newest slot's.
    sql(
        "INSERT INTO limit_slots (key, holder, held, until) VALUES (?, ?, 1, ?)"
        " ON CONFLICT (key, holder) DO UPDATE SET held = limit_slots.held + 1,"
        " until = excluded.until",
        (key, holder, now + lease),
    )
    sql("DELETE FROM limit_slots WHERE key = ? AND holder = ?", (key, holder + _WAITS))
    return True


def _slot_rows(rows: Sequence[tuple[Any, ...]]) -> tuple[dict[str, int], set[str]]:
    """A key's rows: how many slots each holder holds, and which holders wait."""
    holding = {name: count for name, count in rows if not name.endswith(_WAITS)}
    waiting = {name.removesuffix(_WAITS) for name, _ in rows if name.endswith(_WAITS)}
    return holding, waiting


def _slot_contenders(sql: Sql, *, holder: str, now: float) -> dict[str, int]:
    rows = sql(
        "SELECT key, holder, held FROM limit_slots WHERE until > ? AND key IN"
        " (SELECT key FROM limit_slots WHERE holder = ? AND held > 0 AND until > ?)",
        (now, holder, now),
    )
    by_key: dict[str, list[tuple[Any, ...]]] = {}
    for key, name, held in rows:
        by_key.setdefault(key, []).append((name, held))
    contended = {}
    for key, found in by_key.items():
        holding, waiting = _slot_rows(found)
        if waiting - {holder}:
            contended[key] = len({*holding, *waiting})
    return contended


def _renew_slots(sql: Sql, *, holder: str, now: float, lease: float) -> int:
    rows = sql(
        "UPDATE limit_slots SET until = ? WHERE holder = ? AND until > ? AND held > 0"
        " RETURNING key",
        (now + lease, holder, now),
    )
    return len(rows)


def _release_slot(sql: Sql, *, key: str, holder: str) -> None:
    sql(
        "UPDATE limit_slots SET held = held - 1 WHERE key = ? AND holder = ?",
        (key, holder),
    )
    sql(
        "DELETE FROM limit_slots WHERE key = ? AND holder = ? AND held <= 0",
        (key, holder),
    )


def _slot_holders(sql: Sql, *, now: float) -> list[str]:
    rows = sql("SELECT DISTINCT holder FROM limit_slots WHERE held > 0 AND until > ?", (now,))
    return sorted(name for (name,) in rows)


def _drop_slot_holder(sql: Sql, *, holder: str) -> int:
    rows = sql(
        "DELETE FROM limit_slots WHERE holder IN (?, ?) RETURNING held", (holder, holder + _WAITS)
    )
    return sum(1 for (held,) in rows if held > 0)
