"""The dashboard's email log on a big store: fill a SQLite store with N messages (one
million by default), then time the log page and its searches over real HTTP.

    python3 -m bench.dashboard                      # 1,000,000 messages in a temp dir
    python3 -m bench.dashboard --messages 100000 --data /var/tmp/dash-bench
    python3 -m bench.dashboard --data /var/tmp/dash-bench --no-fill   # time again
    python3 -m bench.dashboard --postgresql         # the same on a throwaway PostgreSQL
    python3 -m bench.dashboard --postgresql --no-fill --data /var/tmp/dash-bench
                                                    # the SQLite store there, copied in

The store is filled through the Store's own ``enqueue`` (group commit, many at once),
with 5% of the messages given a delivered attempt and 1% a deferred one, so filters on
status and mailer have something to find; one message in a thousand goes to an address
beyond ASCII at an IDN (``ünal7@bücher.example``), for the searches that must find it.
The dashboard is served by postroom's own API server (uvicorn) on a free loopback port,
and each request is made ``--repeat`` times with an httpx client logged in as an admin;
the table gives the median and the slowest.
With ``--postgresql`` the store is a database in a throwaway cluster (fsync on, as
bench.systems.postgres makes it): the SQLite store is filled (unless ``--no-fill``), then
copied in by ``postroom db copy``'s COPY (minutes for a million messages, where filling
PostgreSQL message by message took most of an hour), then vacuumed and analyzed before
the timing, as autovacuum would. Not part of the test suite
(tests/bench/test_dashboard_bench.py runs a tiny one so it cannot rot). Timings move with
the machine's load: run it on a quiet host.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from bench.systems.postgres import postgres_cluster
from postroom.api import ApiServer
from postroom.clock import SystemClock
from postroom.config.settings import Settings
from postroom.dashboard import DashboardDeps, dashboard_key
from postroom.dashboard.app import create_dashboard
from postroom.delivery.tracking import route_tracking
from postroom.directory import Admins
from postroom.ids import new_queue_id
from postroom.intake import Intake
from postroom.mail.address import Address
from postroom.mail.envelope import Envelope, Recipient, Source, SourceKind
from postroom.mail.spool import SpooledBody
from postroom.net.throttle import FailureThrottle
from postroom.store import Store, open_store
from postroom.store.copy import copy_store
from postroom.store.models import Attempt, MessageMeta, NewMessage, RecipientStatus, RecipientUpdate

ADMIN, PASSWORD = "bench", "bench-password"
_BATCH = 2000
_SOURCE = Source(SourceKind.SMTP, client_ip="192.0.2.1", helo="client.example.net")
_HEADER = b"Received: from client.example.net by mx.example.org\r\n"


_IDN_EVERY = 1000  # one message in this many goes to an address beyond ASCII


def _recipient(i: int) -> Address:
    if i % _IDN_EVERY == 7:
        return Address(f"ünal{i}", "bücher.example")
    return Address(f"user{i}", f"example{i % 100}.net")


def _message(i: int, at: float) -> NewMessage:
    body = SpooledBody()
    body.write(b"Subject: order %d\r\nFrom: shop%d@example.com\r\n\r\nHello\r\n" % (i, i % 50))
    queue_id = new_queue_id(at)
    return NewMessage(
        id=queue_id,
        envelope=Envelope(
            sender=Address(f"shop{i % 50}", "example.com"),
            recipients=(Recipient(_recipient(i)),),
        ),
        source=_SOURCE,
        received_at=at,
        header=_HEADER,
        body=body,
        meta=MessageMeta(queue_id, f"<{i}@example.com>", f"order {i}", ("order", f"shop{i % 50}")),
    )


async def _outcome(store: Store, message: NewMessage, i: int) -> None:
    address = str(message.envelope.recipients[0].address)
    delivered = i % 20 == 0
    status = RecipientStatus.DELIVERED if delivered else RecipientStatus.DEFERRED
    update = RecipientUpdate(
        address, status, None if delivered else message.received_at + 600, "250 ok"
    )
    attempt = Attempt(
        message.id, address, message.received_at + 1, "mx" if delivered else "relay",
        status.value, 250 if delivered else 451, None, "ok" if delivered else "later",
    )  # fmt: skip
    await store.record_outcomes(message.id, [update], [attempt])


async def fill(store: Store, count: int, start: float) -> float:
    began = time.perf_counter()
    for first in range(0, count, _BATCH):
        batch = [_message(i, start + i * 0.01) for i in range(first, min(count, first + _BATCH))]
        await asyncio.gather(*(store.enqueue(m) for m in batch))
        await asyncio.gather(
            *(
                _outcome(store, m, first + k)
                for k, m in enumerate(batch)
                if (first + k) % 20 == 0 or (first + k) % 100 == 1
            )
        )
        for m in batch:
            m.body.close()
        done = min(count, first + _BATCH)
        if done % 100_000 == 0 or done == count:
            print(f"  {done:,} messages", file=sys.stderr, flush=True)
    return time.perf_counter() - began


def requests(count: int, sample_id: str) -> list[tuple[str, str]]:
    """(label, path): the log as an operator uses it."""
    middle = count // 2
    idn = quote(f"ünal{middle // _IDN_EVERY * _IDN_EVERY + 7}@")
    return [
        ("log, first page", "/dashboard/log"),
        ("recipient search (one match)", f"/dashboard/log?to=user{middle}%40"),
        ("recipient search (1% match)", "/dashboard/log?to=example7.net"),
        ("recipient beyond ASCII (one match)", f"/dashboard/log?to={idn}"),
        ("IDN domain as A-label (0.1% match)", "/dashboard/log?to=%40xn--bcher-kva.example"),
        ("sender search", "/dashboard/log?sender=shop7%40"),
        ("subject search (one match)", f"/dashboard/log?subject=order+{middle}"),
        ("tag filter (2% match)", "/dashboard/log?tag=shop7"),
        ("status deferred", "/dashboard/log?status=deferred"),
        ("mailer relay", "/dashboard/log?mailer=relay"),
        ("queue id", f"/dashboard/log?id={sample_id}"),
        ("next page (keyset)", f"/dashboard/log?after={sample_id}"),
        ("time range", "/dashboard/log?since=2027-01-15T00%3A00&until=2027-01-16T00%3A00"),
        ("overview", "/dashboard/"),
    ]


async def measure(
    url: str, paths: list[tuple[str, str]], repeat: int
) -> list[tuple[str, float, float]]:
    rows = []
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        login = await http.get("/dashboard/login")
        token = re.search(r'name="csrf" value="([^"]*)"', login.text)
        assert token is not None
        await http.post(
            "/dashboard/login", data={"csrf": token[1], "name": ADMIN, "password": PASSWORD}
        )
        for label, path in paths:
            times = []
            for _ in range(repeat):
                began = time.perf_counter()
                answer = await http.get(path)
                times.append(time.perf_counter() - began)
                if answer.status_code not in (200, 303):
                    raise SystemExit(f"{path}: HTTP {answer.status_code}")
            rows.append((label, statistics.median(times), max(times)))
    return rows


async def main(args: argparse.Namespace) -> int:
    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="dash-bench-"))
    data.mkdir(parents=True, exist_ok=True)
    sqlite = data / "postroom.db"
    if not args.no_fill:
        store = await open_store(f"sqlite:///{sqlite}", migrate=True)
        try:
            print(f"filling {sqlite} with {args.messages:,} messages", file=sys.stderr)
            took = await fill(store, args.messages, start=1_800_000_000.0)
            print(f"filled in {took:.0f} s ({args.messages / took:,.0f} messages/s)")
        finally:
            await store.aclose()
    if not args.postgresql:
        return await run(args, data, f"sqlite:///{sqlite}")
    with postgres_cluster() as cluster:
        name = cluster.new_database("dashboard")
        url = cluster.url(name)
        began = time.perf_counter()
        await asyncio.to_thread(copy_store, sqlite, url)
        # What autovacuum does after a million inserts: statistics, and the visibility
        # map an index-only scan needs (the log's keyset walks and the recipient lookups).
        cluster.psql("VACUUM (ANALYZE)", name)
        print(f"copied into PostgreSQL and vacuumed in {time.perf_counter() - began:.0f} s")
        return await run(args, data, url)


async def run(args: argparse.Namespace, data: Path, url: str) -> int:
    settings = Settings.model_validate({"data_dir": data, "hostname": "bench.test"})
    store = await open_store(url, migrate=True)
    clock = SystemClock()
    try:
        if await store.admin(ADMIN) is None:
            await Admins(store, clock).add(ADMIN, PASSWORD)
        count = await store.count_messages()
        sample = await store.messages(limit=1, after=new_queue_id(1_800_000_000.0 + count * 0.005))
        deps = DashboardDeps(
            store=store,
            intake=Intake.from_settings(
                settings, store, clock, route_tracking=route_tracking(settings)
            ),
            clock=clock,
            settings=settings,
            key=dashboard_key(data),
            throttle=FailureThrottle(store, clock, max_failures=1000, window=1),
        )
        server = ApiServer(create_dashboard_app(deps), "127.0.0.1", 0, grace=1)
        await server.start()
        try:
            host, port = server.bound
            rows = await measure(
                f"http://{host}:{port}", requests(count, sample[0].id), args.repeat
            )
        finally:
            await server.stop()
    finally:
        await store.aclose()
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())
    print(f"\n{count:,} messages in the store; {args.repeat} requests each (median, slowest);")
    print(f"load average {load}\n")
    print("| request | median ms | slowest ms |\n|---|---:|---:|")
    for label, median, slowest in rows:
        print(f"| {label} | {median * 1000:.0f} | {slowest * 1000:.0f} |")
    return 0


def create_dashboard_app(deps: DashboardDeps) -> Starlette:
    """The dashboard mounted where the server mounts it (/dashboard)."""
    return Starlette(routes=[Mount("/dashboard", create_dashboard(deps))])


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench.dashboard", description=__doc__)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--data", help="the data directory (default: a new temp directory)")
    parser.add_argument("--no-fill", action="store_true", help="time an already filled store")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument(
        "--postgresql", action="store_true", help="a throwaway PostgreSQL cluster, not SQLite"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse())))
