"""A store that fails under the scheduler (full, locked) stops nothing for good: the
error is logged and shown on /readyz while it lasts, and delivery resumes on its own.
A database SQLite finds damaged while running is logged and shown on /readyz too."""

from __future__ import annotations

import logging
import random
import sqlite3
from pathlib import Path

import httpx
import pytest

from postroom.errors import StoreDamaged, StoreFull, StoreUnavailable
from postroom.store.rows import CLAIM_BODY_MAX
from tests.support.faulty_store import FaultyStore
from tests.support.servers import run_cli, smtp_client, wait_for, write_config
from tests.support.thread import MakeServer, ServerThread


def maildir_count(srv: ServerThread) -> int:
    """Messages delivered into app@example.test's Maildir (new/ and cur/)."""
    box = srv.data_dir / "mail" / "example.test" / "app" / "Maildir"
    return sum(len(list((box / sub).iterdir())) for sub in ("new", "cur") if (box / sub).is_dir())


def local_server(make_server: MakeServer, tmp_path: Path) -> tuple[ServerThread, FaultyStore]:
    store = FaultyStore(tmp_path / "faulty.db")
    # The scheduler's way for local mail too: its faults are what these tests are about
    # (the direct path's own are in tests/delivery/test_direct.py).
    srv: ServerThread = make_server(deliver=True, store=store, delivery={"local_at_once": False})
    srv.add_domain("example.test")
    srv.add_user("app@example.test", "s3cret-pass")
    return srv, store


def send_local(srv: ServerThread, subject: str, body: str = "hi\r\n") -> None:
    with smtp_client(srv.ports["mx"]) as client:
        refused = client.sendmail(
            "someone@elsewhere.test", ["app@example.test"], f"Subject: {subject}\r\n\r\n{body}"
        )
    assert refused == {}


def readyz(srv: ServerThread) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{srv.api_port}/readyz", timeout=10)


def test_delivery_resumes_after_store_full_in_the_claim_without_a_restart(
    make_server: MakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom")
    srv, store = local_server(make_server, tmp_path)
    assert readyz(srv).status_code == 200
    assert readyz(srv).json() == {"status": "ready"}
    store.claim_fault = StoreFull("storage is full: injected")
    send_local(srv, "while full")  # accepting still works: only the claim fails
    wait_for(lambda: store.refused_claims >= 1)
    answer = readyz(srv)
    assert answer.status_code == 503
    (failing,) = answer.json()["failing"]
    assert failing["part"] == "scheduler"
    assert "storage is full: injected" in failing["reason"]
    assert maildir_count(srv) == 0
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("storage is full: injected" in r.getMessage() for r in logged)

    store.claim_fault = None  # space was freed
    wait_for(lambda: maildir_count(srv) == 1)
    wait_for(lambda: readyz(srv).status_code == 200)
    send_local(srv, "after")  # and the scheduler goes on as before
    wait_for(lambda: maildir_count(srv) == 2)
    assert any("works again" in r.getMessage() for r in caplog.records)


def test_a_store_error_answered_by_intake_is_named_by_an_idle_scheduler(
    make_server: MakeServer, tmp_path: Path
) -> None:
    """All mail delivered, the scheduler idle: a database lost now shows first to
    intake, as a 451. Intake tells the scheduler, whose own store calls then fail, so
    /readyz names the trouble at once, not when the scheduler next looks (a minute)."""
    srv, store = local_server(make_server, tmp_path)
    send_local(srv, "before")
    wait_for(lambda: maildir_count(srv) == 1)  # nothing left: the scheduler waits idle
    store.claim_fault = store.recipient_fault = StoreUnavailable("database lost: injected")
    with smtp_client(srv.ports["mx"]) as client:
        client.ehlo("client.test")
        assert client.mail("someone@elsewhere.test")[0] == 250
        code, text = client.rcpt("app@example.test")
    assert (code, text[:5]) == (451, b"4.3.0")
    wait_for(lambda: readyz(srv).status_code == 503, within=10)
    (failing,) = readyz(srv).json()["failing"]
    assert failing["part"] == "scheduler"
    assert "database lost: injected" in failing["reason"]
    store.claim_fault = store.recipient_fault = None  # the database is back
    wait_for(lambda: readyz(srv).status_code == 200)
    send_local(srv, "after")
    wait_for(lambda: maildir_count(srv) == 2)


@pytest.mark.parametrize("step", ["record", "body"])
def test_a_failed_store_step_of_an_attempt_is_retried_and_the_message_delivered_once(
    make_server: MakeServer, tmp_path: Path, step: str
) -> None:
    """The outcome write, or the body read: the claimed attempt waits for the store (its
    lease renewed) and finishes once it works, within the lease (60 s), not after it."""
    srv, store = local_server(make_server, tmp_path)
    setattr(store, f"{step}_fault", StoreUnavailable("storage failed: injected"))
    # A body up to CLAIM_BODY_MAX comes with the claim: a larger one is read on its own.
    body = "x" * 70 + "\r\n"
    send_local(srv, "stored late", body * (CLAIM_BODY_MAX // len(body) + 1))
    refused = f"refused_{'records' if step == 'record' else 'bodies'}"
    wait_for(lambda: getattr(store, refused) >= 2)  # tried, and tried again
    assert readyz(srv).json()["failing"][0]["part"] == "scheduler"
    setattr(store, f"{step}_fault", None)
    (message,) = srv.call(srv.store.messages(limit=10))
    wait_for(lambda: srv.statuses(message.id) == ["delivered"])
    assert maildir_count(srv) == 1  # not delivered again while the step was retried
    wait_for(lambda: readyz(srv).status_code == 200)


def test_damage_found_at_run_time_is_logged_and_shown_on_readyz(
    make_server: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    srv: ServerThread = make_server()
    srv.add_domain("example.test")
    big = b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 3000  # overflow pages at the end
    with smtp_client(srv.ports["mx"]) as client:
        client.sendmail("someone@elsewhere.test", ["postmaster@example.test"], big)
    (message,) = srv.call(srv.store.messages(limit=10))
    db = srv.data_dir / "postroom.db"
    with sqlite3.connect(db) as conn:  # move the body from the WAL into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db.stat().st_size
    with db.open("r+b") as f:  # damage the body's pages, which no reader has cached
        f.seek(size - 3 * 4096)
        f.write(random.Random(5).randbytes(3 * 4096))
    with pytest.raises(StoreDamaged):
        srv.call(srv.store.read_body(message.id))
    answer = readyz(srv)
    assert answer.status_code == 503
    (failing,) = answer.json()["failing"]
    assert failing["part"] == "store" and "damaged" in failing["reason"]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("the database is damaged" in e and "postroom db check" in e for e in errors)


def test_postroom_status_names_the_failing_part(make_server: MakeServer, tmp_path: Path) -> None:
    store = FaultyStore(tmp_path / "faulty.db")
    # The scheduler's way for local mail too: its faults are what these tests are about
    # (the direct path's own are in tests/delivery/test_direct.py).
    srv: ServerThread = make_server(deliver=True, store=store, delivery={"local_at_once": False})
    config = write_config(tmp_path / "status.toml", srv.data_dir)
    assert run_cli(config, "status").returncode == 0
    store.claim_fault = StoreFull("storage is full: injected")
    assert srv.server.scheduler is not None
    srv.server.scheduler.wake()
    wait_for(lambda: store.refused_claims >= 1)
    done = run_cli(config, "status")
    assert done.returncode == 1
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("failing:")]
    assert line.startswith("failing: scheduler (")
    assert "storage is full: injected" in line
    store.claim_fault = None


def test_a_listener_that_stops_accepting_makes_readyz_fail_naming_it(
    make_server: MakeServer, tmp_path: Path
) -> None:
    srv: ServerThread = make_server()
    assert readyz(srv).json() == {"status": "ready"}
    smtp = srv.server.smtp
    assert smtp is not None
    mx = next(
        listener
        for spec, listener in zip(smtp.specs, smtp.listeners, strict=True)
        if spec.role == "mx"
    )
    port = mx.bound_port
    srv.loop.call_soon_threadsafe(mx.stop_accepting)  # the socket closed under the server

    wait_for(lambda: readyz(srv).status_code == 503)
    (failing,) = readyz(srv).json()["failing"]
    assert failing["part"] == f"listener mx 127.0.0.1:{port}"
    assert failing["reason"] == "not accepting connections"
