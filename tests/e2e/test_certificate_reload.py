"""SIGHUP reloads the TLS certificate of a real `postroom serve`: sessions already open
keep working on the old one, new connections (STARTTLS and implicit TLS) get the new
one, and files that do not load are logged while the certificate in use stays."""

from __future__ import annotations

import signal
import smtplib
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.support.servers import RunningProcess, start_process, wait_for, write_config

CA = trustme.CA()


def install(leaf: trustme.LeafCert, cert: Path, key: Path) -> None:
    """Replace the files as certbot's deploy hook would: the chain, then the key."""
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))


def der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def client_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    CA.configure_trust(context)
    return context


def starttls_session(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=10)
    client.ehlo("client.test")
    client.starttls(context=client_context())
    client.ehlo("client.test")
    return client


def peer_certificate(client: smtplib.SMTP) -> bytes | None:
    assert isinstance(client.sock, ssl.SSLSocket)
    return client.sock.getpeercert(binary_form=True)


def implicit_tls_certificate(port: int) -> bytes | None:
    with smtplib.SMTP_SSL("127.0.0.1", port, timeout=10, context=client_context()) as client:
        client.ehlo("client.test")
        return peer_certificate(client)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "fullchain.pem", tmp_path / "privkey.pem"


@pytest.fixture
def running(tmp_path: Path, files: tuple[Path, Path]) -> Iterator[RunningProcess]:
    cert, key = files
    install(CA.issue_cert("mail.test", "127.0.0.1"), cert, key)
    config = write_config(
        tmp_path / "postroom.toml",
        tmp_path / "data",
        f'[tls]\ncert = "{cert}"\nkey = "{key}"\n',
        top="workers = 2\n",  # the primary passes SIGHUP on to its accept workers
    )
    proc = start_process(config, tmp_path / "postroom.log")
    yield proc
    if proc.process.poll() is None:
        proc.kill()


def test_sighup_gives_new_connections_the_new_certificate_and_keeps_open_sessions(
    running: RunningProcess, files: tuple[Path, Path]
) -> None:
    cert, key = files
    log = running.log
    old_session = starttls_session(running.ports["submission"])
    first = peer_certificate(old_session)

    renewed = CA.issue_cert("mail.test", "127.0.0.1")
    install(renewed, cert, key)
    running.signal(signal.SIGHUP)
    wait_for(lambda: log.read_text().count("TLS certificate reloaded") == 3)

    assert old_session.noop()[0] == 250  # the open session carries on, on its certificate
    assert old_session.mail("app@example.test")[0] in (250, 530)
    assert peer_certificate(old_session) == first
    old_session.quit()
    for _ in range(4):  # whichever process accepts it
        with starttls_session(running.ports["submission"]) as new_session:
            assert peer_certificate(new_session) == der(renewed) != first
        assert implicit_tls_certificate(running.ports["submissions"]) == der(renewed)

    # A half-written renewal (a certificate whose key has not come yet) is refused.
    install(CA.issue_cert("mail.test", "127.0.0.1"), cert, key.with_suffix(".next"))
    running.signal(signal.SIGHUP)
    wait_for(lambda: log.read_text().count("TLS certificate not reloaded") == 3)
    assert f"tls.key: {key} does not belong to the certificate {cert}" in log.read_text()
    for _ in range(4):
        assert implicit_tls_certificate(running.ports["submissions"]) == der(renewed)
        with starttls_session(running.ports["mx"]) as mx_session:
            assert peer_certificate(mx_session) == der(renewed)
    assert running.process.poll() is None
    assert "exited" not in log.read_text()  # no worker ended on the signal
