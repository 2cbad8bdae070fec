"""A node whose PostgreSQL server stops (``pg_ctl stop -m fast``) and starts again: every
command that needs the database gets a temporary answer at once, the SMTP session goes
on, /readyz names what fails, and the node works again by itself when the database is
back, on the same connections of its clients."""

from __future__ import annotations

import smtplib
from collections.abc import Callable, Iterator

import pytest

from tests.support.postgres import PostgresCluster
from tests.support.servers import client_context, smtp_client, wait_for
from tests.support.thread import ServerThread

MESSAGE = b"From: app@example.test\r\nSubject: hi\r\n\r\nHello\r\n"


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.lend_database()
    yield postgres_cluster.url(name)
    postgres_cluster.give_back(name)


class Outage:
    """Stops the session's database server and starts it again, at the test's end at the
    latest (the next tests use it)."""

    def __init__(self, cluster: PostgresCluster) -> None:
        self._cluster = cluster
        self.down = False

    def begin(self) -> None:
        self._cluster.halt()
        self.down = True

    def end(self) -> None:
        if self.down:
            self._cluster.resume()
            self.down = False


@pytest.fixture
def outage(postgres_cluster: PostgresCluster) -> Iterator[Outage]:
    stopping = Outage(postgres_cluster)
    yield stopping
    stopping.end()


def failing(server: ServerThread) -> set[str]:
    return {problem.part for problem in server.server.readiness.problems()}


def test_a_lost_database_gets_4xx_answers_and_the_session_goes_on_when_it_is_back(
    make_server: Callable[..., ServerThread],
    database: str,
    outage: Outage,
) -> None:
    server = make_server(deliver=True, storage=database)
    server.add_domain("example.test")
    server.add_user("app@example.test", "s3cret-pass")
    with smtp_client(server.ports["mx"]) as mx, smtp_client(server.ports["submission"]) as sub:
        mx.ehlo("client.test")
        sub.starttls(context=client_context(server.data_dir))
        outage.begin()
        # RCPT asks the directory, DATA commits: both 451 4.3.0, the session stays.
        assert mx.mail("a@elsewhere.test")[0] == 250
        code, text = mx.rcpt("postmaster@example.test")
        assert (code, text.split(b" ")[0]) == (451, b"4.3.0")
        mx.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            sub.login("app@example.test", "s3cret-pass")
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (454, b"4.7.0")
        wait_for(lambda: "queue-watch" in failing(server))  # no wake-ups from other nodes
        outage.end()
        # The same session is served again once the store has its connections back (it
        # tries again at most 0.5 s after its last failure): meanwhile only RCPT's
        # 451 4.3.0. The writer's and the limits' connections, unused in the outage,
        # died with the server: each is made anew before its first call, not failed.
        wait_for(lambda: _sent(mx))
        sub.login("app@example.test", "s3cret-pass")
        assert sub.sendmail("app@example.test", ["postmaster@example.test"], MESSAGE) == {}
    wait_for(lambda: not failing(server))  # delivery claims and listens again by itself


def _sent(client: smtplib.SMTP) -> bool:
    """One message to postmaster: True once accepted; a 451 4.3.0 RCPT (the store not
    yet back) is False. Any other answer fails the test: once RCPT is answered, DATA's
    commit is too, on a connection made anew if the old one died in the outage."""
    try:
        return client.sendmail("a@elsewhere.test", ["postmaster@example.test"], MESSAGE) == {}
    except smtplib.SMTPRecipientsRefused as refused:
        ((code, text),) = refused.recipients.values()
        assert (code, text.split(b" ")[0]) == (451, b"4.3.0")
        return False
