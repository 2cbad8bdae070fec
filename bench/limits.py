"""What the shared limits cost: calls per second of each ``LimitStore`` call, one node.

    .venv/bin/python -m bench.limits                      # SQLite (a limits file in a temp dir)
    .venv/bin/python -m bench.limits --postgresql URL     # and PostgreSQL at URL

Each call is made ``--calls`` times one after another (a node's limit calls run one at a
time on their own connection), then ``--concurrency`` at once, on distinct keys so that
the figure is the store's, not a queue behind one full limit. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from postroom.store.base import Store
from postroom.store.models import Window
from postroom.store.postgres import PostgresStore
from postroom.store.sqlite import SqliteStore

NOW = 1_800_000_000.0

Call = Callable[[Store, int], Awaitable[object]]


async def _window(store: Store, n: int) -> object:
    return await store.take_windows([Window(f"mailer m{n % 50} per_day", 86400, 10**9)], NOW)


async def _token(store: Store, n: int) -> object:
    return await store.take_token(f"api k{n % 50}", NOW, per_second=1e6, burst=10**6)


async def _hit(store: Store, n: int) -> object:
    limits = [(f"auth client c{n}", 10), (f"auth account a{n}", 10)]
    return await store.add_hit(limits, f"a{n}", NOW, window=300)


async def _slot(store: Store, n: int) -> object:
    key = f"connections mx d{n % 50}"
    await store.take_slot(key, 10**6, "bench", NOW, lease=60)
    await store.release_slot(key, "bench")
    return None


CALLS: dict[str, Call] = {
    "take_windows": _window,
    "take_token": _token,
    "add_hit": _hit,
    "take_slot + release_slot": _slot,
}


async def _measure(store: Store, call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    started = time.perf_counter()
    for n in range(calls):
        await call(store, n)
    serial = calls / (time.perf_counter() - started)
    started = time.perf_counter()
    for base in range(0, calls, concurrency):
        await asyncio.gather(*(call(store, calls + base + i) for i in range(concurrency)))
    parallel = calls / (time.perf_counter() - started)
    return serial, parallel


async def _engine(name: str, store: Store, calls: int, concurrency: int) -> None:
    await store.start()
    try:
        for label, call in CALLS.items():
            serial, parallel = await _measure(store, call, calls, concurrency)
            print(f"| {name} | {label} | {serial:,.0f} | {parallel:,.0f} |")
    finally:
        await store.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgresql", metavar="URL", help="also measure this database")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    print(f"| engine | call | calls/s, one at a time | calls/s, {args.concurrency} at once |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as directory:
        store = SqliteStore(Path(directory) / "postroom.db")
        await _engine("SQLite", store, args.calls, args.concurrency)
    if args.postgresql:
        await _engine("PostgreSQL", PostgresStore(args.postgresql), args.calls, args.concurrency)


if __name__ == "__main__":
    asyncio.run(main())
