"""Two nodes on one PostgreSQL database: mail accepted by one is delivered by the other
at once, woken by the database (LISTEN/NOTIFY), not at its next idle check (60 s)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.postgres import PostgresCluster
from tests.support.servers import client_context, smtp_client, wait_for
from tests.support.smtp_peers import Peers
from tests.support.thread import ServerThread


@pytest.fixture
def database(postgres_cluster: PostgresCluster) -> Iterator[str]:
    name = postgres_cluster.lend_database()
    yield postgres_cluster.url(name)
    postgres_cluster.give_back(name)


def test_mail_accepted_on_one_node_is_delivered_by_another_at_once(
    make_server: Callable[..., ServerThread], database: str
) -> None:
    with Peers() as peers:
        relay = peers.start("127.0.0.1")
        mailers = [
            {"name": "relay", "type": "smtp", "host": "127.0.0.1", "port": relay.port,
             "tls": "none", "timeout": 5},
        ]  # fmt: skip
        routes = [{"name": "everything", "mailers": ["relay"]}]
        delivering = make_server(deliver=True, storage=database, mailers=mailers, routes=routes)
        accepting = make_server(deliver=False, storage=database, mailers=mailers, routes=routes)
        accepting.add_domain("example.test")
        accepting.add_user("app@example.test", "s3cret-pass")
        with smtp_client(accepting.ports["submission"]) as client:
            client.starttls(context=client_context(accepting.data_dir))
            client.login("app@example.test", "s3cret-pass")
            message = b"From: app@example.test\r\nSubject: hi\r\n\r\nHello\r\n"
            assert client.sendmail("app@example.test", ["friend@remote.test"], message) == {}
        wait_for(lambda: len(relay.received) == 1, within=15)
        (got,) = relay.received
        assert got.recipients == ("friend@remote.test",)
        (stored,) = delivering.call(delivering.store.messages())
        assert (
            stored.recipients[0].status == "delivered"
            or wait_for(
                lambda: (
                    delivering.call(delivering.store.messages())[0].recipients[0].status
                    == "delivered"
                )
            )
            is None
        )
