"""Three `postroom serve` nodes share one PostgreSQL database. Mail submitted across them
over SMTP and the HTTP API reaches a counting SMTP sink while one node is killed with
SIGKILL in the middle of delivering: nothing acknowledged is lost, and the only
recipients delivered twice are those the killed node had in flight (its leases ended,
another node delivered them again).

The normal run submits QUICK messages; POSTROOM_TEST_DEPTH=deep submits 5,000.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.counting_sink import CountingSink
from tests.support.depth import DEEP
from tests.support.nodes import Load, Node, shared_config, start_nodes
from tests.support.postgres import PostgresCluster
from tests.support.servers import cli_out, wait_for

QUICK = 600
MESSAGES = 5000 if DEEP else QUICK
LEASE = 3.0  # seconds: how long the killed node's recipients wait before another node


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.lend_database()
    yield postgres_cluster.url(name)
    postgres_cluster.give_back(name)


def leases(database: str, *, after: float = 0.0) -> dict[str, float]:
    """Pending recipients whose lease ends after ``after``: address -> end of the lease."""
    with psycopg.connect(database) as conn:
        rows = conn.execute(
            "SELECT address, claimed_until FROM recipients"
            " WHERE status IN ('queued', 'deferred') AND claimed_until > %s",
            (after,),
        ).fetchall()
    return {address: until for address, until in rows}


def stranded_by(database: str, killed_at: dict[str, float]) -> set[str]:
    """Of the leases that ran when a node was killed, those nobody renewed or settled
    since: the recipients the killed node had in flight (a live node renews its own
    every third of the lease, or records the outcome)."""
    now = leases(database)
    return {address for address, until in killed_at.items() if now.get(address) == until}


def setup_nodes(
    tmp_path: Path,
    database: str,
    sink: CountingSink,
    count: int,
    lease: float,
    *,
    database_timeout: float | None = None,
) -> tuple[list[Node], str]:
    top, tables = shared_config(database, sink.port, lease=lease, database_timeout=database_timeout)
    nodes = start_nodes(tmp_path, count, top, tables)
    cli_out(nodes[0].config, "domain", "add", "example.test")
    created = cli_out(nodes[0].config, "apikey", "create", "load", "--any-sender")
    return nodes, created.strip().splitlines()[-1]


def test_a_node_killed_mid_delivery_loses_nothing_and_repeats_only_its_own(
    tmp_path: Path, database: str
) -> None:
    with CountingSink(data_delay=0.05) as sink:
        nodes, token = setup_nodes(tmp_path, database, sink, 3, LEASE)
        try:
            started = time.monotonic()
            load = Load(total=MESSAGES)
            load.smtp(nodes, connections=6)
            load.api(nodes, token, clients=2)
            victim = nodes[1]
            # A third of the recipients delivered, and the victim waiting for a 250.
            wait_for(
                lambda: sink.count() >= MESSAGES * 2 // 3 and sink.answering(victim.helo) > 0,
                within=120,
            )
            victim.kill()
            in_flight = leases(database, after=time.time())
            time.sleep(LEASE / 2)  # each live node renews at least once (every LEASE / 3)
            stranded = stranded_by(database, in_flight)
            load.join()
            expected = {(mid, r) for mid, rcpts in load.acked.items() for r in rcpts}
            wait_for(lambda: expected <= set(sink.copies()), within=120)
            took = time.monotonic() - started
        finally:
            for node in nodes:
                node.stop()
        copies = sink.copies()
        twice = {key for key, n in copies.items() if n > 1}
        print(
            f"\n{MESSAGES} submitted, {len(load.acked)} acknowledged ({len(expected)}"
            f" recipients), answers {dict(load.answers)}; {sum(copies.values())} deliveries"
            f" in {took:.1f} s; killed {victim.name} with {len(stranded)} recipients in"
            f" flight; {len(twice)} delivered twice"
        )
        assert len(load.acked) > MESSAGES * 0.9  # most submissions were acknowledged
        assert expected <= set(copies)  # nothing acknowledged is lost
        assert stranded, "the node was killed with nothing in flight: kill it earlier"
        assert {r for _, r in twice} <= stranded  # only the killed node's in-flight ones
        assert all(copies[key] == 2 for key in twice)
        by_node = {(d.message_id, d.recipient, d.helo) for d in sink.deliveries()}
        assert all((mid, r, victim.helo) in by_node for mid, r in twice)


OUTAGE = 10.0  # seconds without the database
# Longer than the outage: attempts that delivered meanwhile keep their recipients until
# they can write the outcome (leases cannot be renewed while the database is away).
OUTAGE_LEASE = 60.0


def readyz(node: Node) -> tuple[int, list[str]]:
    """/readyz's status code and the parts it names failing."""
    answer = httpx.get(f"{node.api_url}/readyz", timeout=10)
    return answer.status_code, [part["part"] for part in answer.json().get("failing", [])]


@contextlib.contextmanager
def outage(cluster: PostgresCluster, kind: str) -> Iterator[None]:
    """``stopped``: the server shut down (connections closed, new ones refused);
    ``frozen``: every process of it stopped with SIGSTOP (connections open, nothing
    answers: a frozen machine, a network that drops everything)."""
    if kind == "frozen":
        with cluster.frozen():
            yield
        return
    cluster.halt()
    try:
        yield
    finally:
        cluster.resume()


# What /readyz names failing meanwhile: delivery's claims, and (when the connections
# are closed) the wake-ups from other nodes; a frozen server leaves the listening
# connection open and quiet, which is what a quiet database looks like.
FAILING = {"stopped": {"scheduler", "queue-watch"}, "frozen": {"scheduler"}}
# [database] timeout: how long a call waits for a database that does not answer.
DATABASE_TIMEOUT = 2.0


@pytest.mark.parametrize("kind", ["stopped", "frozen"])
def test_nodes_answer_4xx_while_the_database_is_down_and_recover_alone(
    tmp_path: Path, database: str, postgres_cluster: PostgresCluster, kind: str
) -> None:
    with CountingSink() as sink:
        nodes, token = setup_nodes(
            tmp_path, database, sink, 2, OUTAGE_LEASE, database_timeout=DATABASE_TIMEOUT
        )
        load = Load()
        try:
            load.smtp(nodes, connections=4)
            load.api(nodes, token, clients=2)
            wait_for(lambda: sink.count() >= 200, within=60)
            seen: dict[str, set[str]] = {node.name: set() for node in nodes}
            with outage(postgres_cluster, kind):
                down = time.monotonic()
                while time.monotonic() - down < OUTAGE:
                    for node in nodes:
                        code, failing = readyz(node)
                        if code == 503:
                            seen[node.name].update(failing)
                    time.sleep(0.5)
            load.mark()
            back = time.monotonic()
            doors = {f"smtp:{n.smtp_port}" for n in nodes} | {f"api:{n.api_url}" for n in nodes}
            wait_for(lambda: doors <= set(load.first_ack_after), within=60)
            accepting = max(load.first_ack_after.values()) - back
            wait_for(lambda: all(readyz(node) == (200, []) for node in nodes), within=60)
            ready = time.monotonic() - back
            load.stop()
            expected = {(mid, r) for mid, rcpts in load.acked.items() for r in rcpts}
            wait_for(lambda: expected <= set(sink.copies()), within=60)
            delivered = time.monotonic() - back
        finally:
            load.stop()
            for node in nodes:
                node.stop()
        print(
            f"\n{len(load.acked)} acknowledged, answers {dict(load.answers)}; failing meanwhile"
            f" {seen}; accepting again {accepting:.1f} s after the database, ready {ready:.1f} s,"
            f" all delivered {delivered:.1f} s; the slowest answer took {load.slowest:.1f} s"
        )
        # Meanwhile: 451 4.3.0 and 503 with a JSON error, never a hang or a lost session.
        assert load.answers["451 4.3.0"] > 0 and load.answers["503"] > 0
        assert set(load.answers) <= {"ok", "451 4.3.0", "503"}, load.answers
        # No answer waited for the database longer than a few of its timeouts (the
        # clients' own timeout is 20 s: a hang would show as "timeout" above, or here).
        assert load.slowest < 5 * DATABASE_TIMEOUT, load.slowest
        # /readyz named what failed
        assert all(FAILING[kind] <= failing for failing in seen.values()), seen
        copies = sink.copies()
        assert expected <= set(copies)  # nothing acknowledged is lost
        assert all(n == 1 for n in copies.values())  # nothing delivered twice either
