"""TLS material: the self-signed certificate, configured files, and real handshakes."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from postroom.config.settings import Settings, TlsSettings
from postroom.errors import ConfigError
from postroom.net.tls import ServerTls, ensure_certificate, server_context, tls_info


def settings(
    tmp_path: Path, hostname: str = "mail.test", cert: Path | None = None, key: Path | None = None
) -> Settings:
    tls = TlsSettings(cert=cert, key=key)
    return Settings(hostname=hostname, data_dir=tmp_path / "data", tls=tls)


def san(cert: Path) -> tuple[list[str], list[str]]:
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = [str(ip) for ip in names.get_values_for_type(x509.IPAddress)]
    return names.get_values_for_type(x509.DNSName), ips


def test_generated_certificate_covers_loopback_and_the_hostname(tmp_path: Path) -> None:
    cert, key = ensure_certificate(settings(tmp_path))
    assert cert == tmp_path / "data" / "tls" / "cert.pem"
    assert key == tmp_path / "data" / "tls" / "key.pem"
    dns, ips = san(cert)
    assert set(dns) == {"localhost", "mail.test"}
    assert set(ips) == {"127.0.0.1", "::1"}


def test_the_key_is_private(tmp_path: Path) -> None:
    _, key = ensure_certificate(settings(tmp_path))
    assert key.stat().st_mode & 0o777 == 0o600
    assert (key.parent.stat().st_mode & 0o077) == 0


def test_validity_is_825_days(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path))
    certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert 825 <= lifetime.days <= 826


def test_the_certificate_is_reused(tmp_path: Path) -> None:
    cert, key = ensure_certificate(settings(tmp_path))
    first = cert.read_bytes(), key.read_bytes()
    assert ensure_certificate(settings(tmp_path)) == (cert, key)
    assert (cert.read_bytes(), key.read_bytes()) == first


def test_a_new_hostname_makes_a_new_certificate(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path))
    before = cert.read_bytes()
    ensure_certificate(settings(tmp_path, hostname="mx.example.org"))
    assert cert.read_bytes() != before
    assert "mx.example.org" in san(cert)[0]


def test_a_broken_certificate_file_is_replaced(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path))
    cert.write_text("not a certificate")
    ensure_certificate(settings(tmp_path))
    assert "mail.test" in san(cert)[0]


def test_an_idn_hostname_is_named_in_a_labels(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path, hostname="post.bücher.example"))
    assert "post.xn--bcher-kva.example" in san(cert)[0]


def test_an_ip_hostname_is_an_ip_name(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path, hostname="192.0.2.25"))
    assert "192.0.2.25" in san(cert)[1]
    assert "192.0.2.25" not in san(cert)[0]


def test_configured_files_are_used_as_they_are(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("mail.example.com")
    cert, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    leaf.private_key_and_cert_chain_pem.write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    assert ensure_certificate(settings(tmp_path, cert=cert, key=key)) == (cert, key)
    assert not (tmp_path / "data" / "tls").exists()
    server_context(cert, key)


def test_a_missing_configured_certificate_is_a_config_error(tmp_path: Path) -> None:
    configured = settings(tmp_path, cert=tmp_path / "nope.pem", key=tmp_path / "nokey.pem")
    with pytest.raises(ConfigError) as caught:
        ensure_certificate(configured)
    assert str(caught.value) == f"tls.cert: {tmp_path / 'nope.pem'}: no such file"


def test_a_file_without_a_certificate_is_named(tmp_path: Path) -> None:
    _, key = ensure_certificate(settings(tmp_path))
    bad = tmp_path / "bad.pem"
    bad.write_text("hello")
    with pytest.raises(ConfigError) as caught:
        server_context(bad, key)
    assert str(caught.value) == f"tls.cert: {bad} holds no PEM certificate"


def test_a_file_without_a_key_is_named(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path))
    with pytest.raises(ConfigError) as caught:
        server_context(cert, cert)
    assert str(caught.value) == f"tls.key: {cert} holds no usable PEM private key"


def test_a_key_of_another_certificate_is_named(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path))
    other = trustme.CA().issue_cert("other.example")
    key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(key))
    with pytest.raises(ConfigError) as caught:
        server_context(cert, key)
    assert str(caught.value) == f"tls.key: {key} does not belong to the certificate {cert}"


def test_an_unreadable_key_is_named(tmp_path: Path) -> None:
    cert, _ = ensure_certificate(settings(tmp_path))
    with pytest.raises(ConfigError, match=r"^tls\.key: cannot read "):
        server_context(cert, tmp_path)


# -- real handshakes on loopback -------------------------------------------------------


async def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_hostname: str
) -> tuple[tuple[str, str], tuple[str, str]]:
    """Connect with ``client``; (server side, client side) tls_info of the connection."""
    seen: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.set_result(tls_info(writer.get_extra_info("ssl_object")))
        await reader.read()
        writer.close()
        await writer.wait_closed()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname=server_hostname
        )
        client_side = tls_info(writer.get_extra_info("ssl_object"))
        server_side = await asyncio.wait_for(seen, 10)
        writer.close()
        await writer.wait_closed()
        return server_side, client_side
    finally:
        listener.close()
        await listener.wait_closed()


async def test_a_client_that_trusts_the_certificate_verifies_localhost(tmp_path: Path) -> None:
    cert, key = ensure_certificate(settings(tmp_path))
    client = ssl.create_default_context(cafile=str(cert))
    server_side, client_side = await handshake(server_context(cert, key), client, "localhost")
    assert server_side == client_side
    assert client_side[0] in {"TLSv1.2", "TLSv1.3"}
    assert client_side[1]


async def test_the_configured_hostname_verifies_too(tmp_path: Path) -> None:
    cert, key = ensure_certificate(settings(tmp_path))
    client = ssl.create_default_context(cafile=str(cert))
    _, (version, _) = await handshake(server_context(cert, key), client, "mail.test")
    assert version.startswith("TLSv1.")


async def test_another_name_does_not_verify(tmp_path: Path) -> None:
    cert, key = ensure_certificate(settings(tmp_path))
    client = ssl.create_default_context(cafile=str(cert))
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(server_context(cert, key), client, "elsewhere.example")


async def test_min_version_13_refuses_a_tls12_client(tmp_path: Path) -> None:
    cert, key = ensure_certificate(settings(tmp_path))
    client = ssl.create_default_context(cafile=str(cert))
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(server_context(cert, key, "1.3"), client, "localhost")
    client = ssl.create_default_context(cafile=str(cert))
    _, (version, _) = await handshake(server_context(cert, key, "1.3"), client, "localhost")
    assert version == "TLSv1.3"


def test_the_server_refuses_tls11(tmp_path: Path) -> None:
    cert, key = ensure_certificate(settings(tmp_path))
    context = server_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE


# Run in a process of its own: checked_in_child forks, which is sound only before any
# thread exists, and the question is what that process has imported afterwards.
_CHECK_IN_CHILD = """
import json, sys
from pathlib import Path
from postroom.config.settings import Settings, TlsSettings
from postroom.net.tls import checked_in_child

data, cert, key = sys.argv[1:4]
tls = TlsSettings(cert=Path(cert), key=Path(key)) if cert else TlsSettings()
settings = Settings(hostname="mail.test", data_dir=Path(data), tls=tls)
answers = [checked_in_child(settings) for _ in range(2)]
print(json.dumps([a and [str(a[0]), str(a[1]), a[2]] for a in answers]))
print(json.dumps("cryptography" in sys.modules))
"""


def check_in_child(data: Path, cert: Path | None = None, key: Path | None = None) -> list[object]:
    done = subprocess.run(
        [sys.executable, "-c", _CHECK_IN_CHILD, str(data), str(cert or ""), str(key or "")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    answers, loaded = done.stdout.splitlines()
    assert json.loads(loaded) is False  # cryptography stayed in the child
    result = json.loads(answers)
    assert isinstance(result, list)
    return result


def test_the_certificate_is_made_and_checked_in_a_child_without_loading_cryptography_here(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    made, kept = check_in_child(data)
    cert, key = data / "tls" / "cert.pem", data / "tls" / "key.pem"
    assert made == [str(cert), str(key), True]  # "self-signed, made now" in the ready line
    assert kept == [str(cert), str(key), False]
    assert san(cert) == (["localhost", "mail.test"], ["127.0.0.1", "::1"])


def test_a_pair_the_child_finds_wrong_is_checked_again_here_to_say_why(tmp_path: Path) -> None:
    """The child answers nothing; ServerTls then checks in the server's process, which
    raises the one-line ConfigError naming the file at fault, as it always did."""
    cert, _ = ensure_certificate(settings(tmp_path))
    assert check_in_child(tmp_path / "data", cert, cert) == [None, None]  # cert as the key
    with pytest.raises(ConfigError, match=r"^tls.key: .* holds no usable PEM private key$"):
        ServerTls(settings(tmp_path, cert=cert, key=cert))
