"""``postroom db copy --to postgresql://...``: an SQLite store of a few hundred messages
in every state arrives whole, as the Store API reads it, and the source is not written;
a used target is refused; a count that differs is found."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from postroom.cli import main
from postroom.mail.envelope import Source, SourceKind
from postroom.mail.events import EventType, MailEvent, new_event_id
from postroom.store import RecipientStatus, open_store
from postroom.store.base import Store
from postroom.store.copy import copy_store, table_counts
from postroom.store.models import (
    ApiKeyRecord,
    IdempotencyRecord,
    MessageMeta,
    ProviderEventRecord,
    Suppression,
    SuppressionReason,
    UserRecord,
)
from postroom.store.sqlite import SqliteStore
from tests.store.factories import NOW, attempt, deferred, delivered, final, new_message, to
from tests.support.postgres import PostgresCluster

MESSAGES = 300
# The copy's inline_body_max: the bodies of fill() fall on both sides of it.
INLINE_BODY_MAX = 1024


@pytest.fixture
def target(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """A new database without postroom's tables."""
    name = postgres_cluster.new_database(template="template0")
    yield postgres_cluster.url(name)
    postgres_cluster.drop_database(name)


@pytest.fixture
async def source(tmp_path: Path) -> Path:
    """A configuration whose SQLite store holds messages in every state, their attempts
    and provider events, users, domains, API keys, API meta and idempotency answers."""
    path = tmp_path / "data" / "postroom.db"
    path.parent.mkdir()
    store = SqliteStore(path)
    await store.start()
    try:
        await fill(store)
    finally:
        await store.aclose()
    config = tmp_path / "postroom.toml"
    config.write_text(
        f'hostname = "mail.test"\ndata_dir = "{path.parent}"\nstorage = "sqlite:///{path}"\n'
        f"[database]\ninline_body_max = {INLINE_BODY_MAX}\n"
    )
    return config


async def fill(store: Store) -> None:
    for i in range(MESSAGES):
        at = NOW + i
        body = b"Subject: %d\r\n\r\n" % i + bytes(range(256)) * (i % 7)
        message = new_message(body, at=at, recipients=to(f"a{i}@example.net", f"b{i}@example.com"))
        if i % 5 == 0:  # a DSN about the message before
            own = Source(SourceKind.DSN, protocol="local", dsn_of=f"Q{i}")
            message = dataclasses.replace(message, source=own)
        await store.enqueue(message)
        first, second = f"a{i}@example.net", f"b{i}@example.com"
        match i % 5:
            case 0:
                continue  # queued
            case 1:
                await store.record_outcomes(
                    message.id,
                    [delivered(first), final(second, RecipientStatus.BOUNCED)],
                    [
                        dataclasses.replace(
                            attempt(message.id, first, at + 1),
                            provider_id=f"p{i}",
                            route="r",
                            route_reason="matched recipient_domain equals 'example.net'",
                        ),
                        attempt(message.id, second, at + 1, "bounced", code=550, text="5.1.1 no"),
                    ],
                )
                await store.record_provider_event(
                    ProviderEventRecord(
                        "sg", f"p{i}", first, "opened", "open", at + 5, "{}", at + 6
                    )
                )
            case 2:
                await store.record_outcomes(
                    message.id,
                    [deferred(first, at + 600, warned=True)],
                    [attempt(message.id, first, at + 1, "deferred", code=451, text="4.3.0 later")],
                )
            case 3:
                await store.hold(message.id)
            case _:
                await store.save_send(
                    MessageMeta(message.id, f"<{i}@example.org>", f"s{i}", ("t",), (("k", "v"),)),
                    IdempotencyRecord("shop", f"idem-{i}", "ab" * 32, 202, b'{"id":1}', at),
                    forget_before=0,
                )
    await store.add_domain("example.org", NOW)
    await store.add_user(UserRecord("app@example.org", "$argon2id$x", ("example.com",), NOW))
    await store.add_user(UserRecord("any@example.org", "$argon2id$y", (), NOW, any_sender=True))
    await store.add_api_key(
        ApiKeyRecord("shop", "kid1", "cd" * 32, ("example.com",), NOW, ("send", "read"))
    )
    # A callback about no message postroom knows is kept too.
    await store.record_provider_event(
        ProviderEventRecord("sg", "unknown", "x@example.net", "bounced", "bounce", NOW, "", NOW)
    )
    # The suppression list, and the outbox with a delivery row per event.
    await store.add_suppression(
        Suppression("x@example.net", "", SuppressionReason.HARD_BOUNCE, "provider sg", NOW)
    )
    await store.fan_out(lambda event: ["app"], limit=1000, now=NOW)


def large_objects(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
        assert row is not None
        return int(row[0])


def large_bodies(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM message_bodies WHERE length(data) > ?", (INLINE_BODY_MAX,)
        ).fetchone()
        return int(count)


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main, ["db", "copy", *args, "--config", str(config)], env={"POSTROOM_CONFIG": None}
    )


async def same_contents(source: Store, copy: Store) -> None:
    """Everything the Store API reads of ``source`` reads the same from ``copy``."""
    messages = await source.messages(limit=MESSAGES + 1)
    assert len(messages) == MESSAGES
    assert any(m.dsn_of for m in messages)
    assert await copy.messages(limit=MESSAGES + 1) == messages
    ids = [m.id for m in messages]
    routes: set[str | None] = set()
    for message_id in ids:
        assert await copy.read_body(message_id) == await source.read_body(message_id)
        attempts = await source.attempts(message_id)
        assert await copy.attempts(message_id) == attempts
        routes.update(a.route for a in attempts)
        assert await copy.provider_events(message_id) == await source.provider_events(message_id)
    assert "r" in routes
    assert await copy.message_meta(ids) == await source.message_meta(ids)
    assert len(await source.message_meta(ids)) == MESSAGES // 5
    for i in range(4, MESSAGES, 5):
        answer = await source.idempotent("shop", f"idem-{i}", 0)
        assert answer is not None and await copy.idempotent("shop", f"idem-{i}", 0) == answer
    assert await copy.domains() == await source.domains()
    assert await copy.users() == await source.users()
    assert await copy.api_keys() == await source.api_keys()
    assert await copy.mailer_health(0) == await source.mailer_health(0)
    assert await copy.next_due() == await source.next_due()
    assert await copy.instance_id() == await source.instance_id()
    assert await copy.suppressions() == await source.suppressions()
    deliveries = await source.webhook_deliveries(limit=1000)
    assert deliveries and await copy.webhook_deliveries(limit=1000) == deliveries


async def test_copy_brings_every_row_and_leaves_the_source_as_it_was(
    source: Path, target: str
) -> None:
    db = source.parent / "data" / "postroom.db"
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = invoke(source, "--to", target)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["messages", str(MESSAGES), str(MESSAGES), "ok"]
    assert all(line.endswith("  ok") for line in lines[:-1]), result.output
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    sqlite = SqliteStore(db)
    await sqlite.start()
    postgres = await open_store(target)
    try:
        await same_contents(sqlite, postgres)
        assert large_objects(target) == large_bodies(db) > 0
        # New rows on the copy get ids after the copied ones.
        queued = (await postgres.messages(limit=1))[0]
        first = queued.recipients[0].address
        await postgres.record_outcomes(
            queued.id, [delivered(first)], [attempt(queued.id, first, NOW + 9e3)]
        )
        assert len(await postgres.attempts(queued.id)) == 1
        event = MailEvent(new_event_id(), EventType.SENT, NOW, first, queued.id)
        await postgres.record_events([event])
        assert (await postgres.events(queued.id))[-1].id == event.id
    finally:
        await sqlite.aclose()
        await postgres.aclose()


async def test_copy_refuses_a_database_that_holds_a_store_in_one_line(
    source: Path, target: str
) -> None:
    store = await open_store(target)
    await store.add_domain("example.net", NOW)
    await store.aclose()
    result = invoke(source, "--to", target)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "is not empty (it has domains)" in result.output
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone() == (0,)


async def test_counts_that_differ_after_a_copy_are_found_per_table(
    source: Path, target: str
) -> None:
    db = source.parent / "data" / "postroom.db"
    copy_store(db, target)
    with psycopg.connect(target) as conn:
        conn.execute("DELETE FROM attempts WHERE id = (SELECT min(id) FROM attempts)")
    wrong = [count for count in table_counts(db, target) if not count.matches]
    assert [(c.table, c.source - c.target) for c in wrong] == [("attempts", 1)]


@contextlib.contextmanager
def target_with_trigger(cluster: PostgresCluster, table: str, function: str) -> Iterator[str]:
    """A migrated, empty target whose ``table`` runs ``function`` (a plpgsql body) before
    each row goes in; its URL."""
    name = cluster.new_database()
    url = cluster.url(name)
    try:
        with psycopg.connect(url) as conn:
            conn.execute(
                "CREATE FUNCTION on_row() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN {function} END $$"
            )
            conn.execute(
                f"CREATE TRIGGER on_row BEFORE INSERT ON {table}"
                " FOR EACH ROW EXECUTE FUNCTION on_row()"
            )
        yield url
    finally:
        cluster.drop_database(name)


async def test_copy_exits_1_naming_the_table_whose_rows_did_not_all_arrive(
    source: Path, postgres_cluster: PostgresCluster
) -> None:
    # A trigger drops one attempt on its way in: the copy itself succeeds, only the
    # count can tell.
    drop_one = "IF NEW.id = 1 THEN RETURN NULL; END IF; RETURN NEW;"
    with target_with_trigger(postgres_cluster, "attempts", drop_one) as url:
        result = invoke(source, "--to", url)
        assert result.exit_code == 1
        wrong = [line for line in result.output.splitlines() if "MISMATCH" in line]
        assert len(wrong) == 1 and wrong[0].split()[0] == "attempts"
        assert "postroom: the copy in" in result.output


async def test_a_copy_failing_after_the_large_bodies_leaves_no_large_object(
    source: Path, postgres_cluster: PostgresCluster
) -> None:
    # Users are copied after the bodies: one refused there fails the whole copy.
    with target_with_trigger(postgres_cluster, "users", "RAISE EXCEPTION 'refused';") as url:
        result = invoke(source, "--to", url)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
        assert result.output.count("\n") == 1 and "refused" in result.output, result.output
        assert large_objects(url) == 0
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM message_bodies").fetchone() == (0,)
