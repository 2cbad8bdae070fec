"""TLS material: the server SSLContext, and a self-signed certificate when none is set.

With ``tls.cert``/``tls.key`` unset, the first start makes an EC P-256 key and a
self-signed certificate in ``<data_dir>/tls/`` (key mode 0600) whose names cover
``localhost``, 127.0.0.1, ::1 and the configured hostname; later starts reuse it
until the hostname changes or it is about to expire. Mail clients that check
certificates must be told to trust it; MX peers use opportunistic TLS (RFC 3207)
and do not check.

``ServerTls`` rereads the files on ``reload()`` (SIGHUP, after a renewal): connections
made later get the new certificate, sessions already open keep theirs.

The checks and the making read certificates with cryptography, whose Rust module maps
about 7 MiB of pages at its import and keeps them for the process's life: ``run``
has them done by ``checked_in_child`` in a process forked for it, so that the server's
processes load cryptography only if a reload or a DKIM key asks for it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from postroom.config.settings import Settings
from postroom.errors import AddressError, ConfigError
from postroom.mail.address import to_ascii_domain

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

    _Name = x509.DNSName | x509.IPAddress

__all__ = [
    "CERT_NAME",
    "KEY_NAME",
    "CheckedCertificate",
    "ServerTls",
    "checked_in_child",
    "ensure_certificate",
    "server_context",
    "tls_info",
]

_log = logging.getLogger("postroom.tls")

CERT_NAME = "cert.pem"
KEY_NAME = "key.pem"
VALIDITY = dt.timedelta(days=825)  # the CA/Browser Forum's old maximum; clients accept it
RENEW_BEFORE = dt.timedelta(days=30)
_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}

CheckedCertificate = tuple[Path, Path, bool]
"""(certificate, key, made now): files ``checked_in_child`` found good, or made."""


def ensure_certificate(settings: Settings) -> tuple[Path, Path]:
    """The (certificate, key) files to serve: the configured ones, else our own."""
    tls = settings.tls
    if tls.cert is not None and tls.key is not None:
        _require_file("tls.cert", tls.cert)
        _require_file("tls.key", tls.key)
        return tls.cert, tls.key
    directory = settings.data_dir / "tls"
    cert, key = directory / CERT_NAME, directory / KEY_NAME
    names = _subject_names(settings.hostname)
    if not _usable(cert, key, names):
        _generate(directory, cert, key, settings.hostname, names)
    return cert, key


def checked_in_child(settings: Settings) -> CheckedCertificate | None:
    """``ensure_certificate`` and the pair's check done in a child forked for them (call
    it before any thread exists); None when they failed there: done again in this
    process, they raise what they raised (a one-line error)."""
    directory = settings.data_dir / "tls"
    before = _modified(directory / CERT_NAME)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (a child; its answer is what the tests see)
        try:
            cert, key = ensure_certificate(settings)
            _check_pair(cert, key)
            answer = json.dumps([str(cert), str(key)]).encode()
            while answer:
                answer = answer[os.write(write_end, answer) :]
        finally:
            os._exit(0)  # nothing of the parent's (atexit, log handlers) runs here
    os.close(write_end)
    with os.fdopen(read_end, "rb") as answers:
        answer = answers.read()
    os.waitpid(pid, 0)
    if not answer:
        return None
    cert_name, key_name = json.loads(answer)
    cert, key = Path(cert_name), Path(key_name)
    made = settings.tls.cert is None and _modified(cert) != before
    return cert, key, made


def _modified(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def server_context(
    cert: Path, key: Path, min_version: str = "1.2", *, checked: bool = False
) -> ssl.SSLContext:
    """A server context: TLS >= ``min_version``, the default cipher list, no client certs.
    ``checked``: the pair was checked (``checked_in_child``)."""
    if not checked:
        _check_pair(cert, key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[min_version]
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ConfigError(
                "tls.key", f"{key} does not belong to the certificate {cert}"
            ) from None
        raise ConfigError("tls.cert", f"cannot load {cert} with {key}: {exc.reason}") from None
    return context


class ServerTls:
    """The context listeners and STARTTLS use, whose certificate can be replaced.

    ``context`` stays the one every listener was given; its SNI callback, which OpenSSL
    calls for every ClientHello (with or without a server name), moves each new
    connection onto the context of the newest certificate. A connection's certificate is
    fixed at its handshake, so open sessions never notice a reload."""

    def __init__(self, settings: Settings, checked: CheckedCertificate | None = None) -> None:
        """``checked``: the files to serve, checked in a child (else checked here)."""
        self._settings = settings
        min_version = settings.tls.min_version
        if checked is None:
            before = _modified(settings.data_dir / "tls" / CERT_NAME)
            cert, key = ensure_certificate(settings)
            made = settings.tls.cert is None and _modified(cert) != before
            context = server_context(cert, key, min_version)
        else:
            cert, key, made = checked
            context = server_context(cert, key, min_version, checked=True)
        self.cert, self.key, self.context = cert, key, context
        self.made_now = made  # our self-signed certificate was made at this start
        self._current = self.context
        self.context.sni_callback = self._choose

    def reload(self) -> bool:
        """Read the certificate and key files again; False (logged, the certificate in
        use kept) when they cannot be loaded."""
        try:
            cert, key = ensure_certificate(self._settings)
            context = server_context(cert, key, self._settings.tls.min_version)
        except ConfigError as exc:
            _log.error("TLS certificate not reloaded, keeping the one in use: %s", exc)
            return False
        self.cert, self.key, self._current = cert, key, context
        _log.info("TLS certificate reloaded from %s (%s)", cert, _describe(cert))
        return True

    def _choose(
        self, connection: ssl.SSLObject | ssl.SSLSocket, _name: str | None, given: ssl.SSLContext
    ) -> None:
        if given is not self._current:
            connection.context = self._current


def _describe(cert: Path) -> str:
    """The leaf certificate's subject names and expiry, for the log."""
    from cryptography import x509

    try:
        leaf = x509.load_pem_x509_certificates(cert.read_bytes())[0]
    except (OSError, ValueError):  # replaced again since it was loaded
        return "changed since"
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        subject = ", ".join(str(n.value) for n in names)
    except x509.ExtensionNotFound:
        subject = leaf.subject.rfc4514_string()
    return f"{subject}; valid until {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"


def tls_info(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> tuple[str, str]:
    """(protocol version, cipher name) of an established connection, e.g. for Received:."""
    cipher = ssl_object.cipher()
    return ssl_object.version() or "", cipher[0] if cipher else ""


# -- configured files ------------------------------------------------------------------


def _require_file(key: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(key, f"{path}: no such file")


def _check_pair(cert: Path, key: Path) -> None:
    """Name the file at fault, which OpenSSL's "PEM lib" errors do not."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    cert_data = _read("tls.cert", cert)
    key_data = _read("tls.key", key)
    try:
        x509.load_pem_x509_certificates(cert_data)
    except ValueError:
        raise ConfigError("tls.cert", f"{cert} holds no PEM certificate") from None
    try:
        serialization.load_pem_private_key(key_data, password=None)
    except TypeError:
        raise ConfigError(
            "tls.key", f"{key} is encrypted; give a key without a passphrase"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError("tls.key", f"{key} holds no usable PEM private key") from None


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None


# -- our self-signed certificate ----------------------------------------------------------


def _subject_names(hostname: str) -> list[_Name]:
    from cryptography import x509

    names: list[_Name] = [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    try:
        own: _Name = x509.IPAddress(ipaddress.ip_address(hostname.strip("[]")))
    except ValueError:
        try:
            own = x509.DNSName(to_ascii_domain(hostname.rstrip(".")))
        except AddressError as exc:
            raise ConfigError("hostname", f"{hostname!r} cannot be a certificate name") from exc
    if own not in names:
        names.append(own)
    return names


def _usable(cert: Path, key: Path, names: list[_Name]) -> bool:
    """True when our earlier certificate still covers ``names`` for a while."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
        private_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
        present = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, TypeError, UnsupportedAlgorithm, x509.ExtensionNotFound):
        return False
    if _public_bytes(private_key.public_key()) != _public_bytes(certificate.public_key()):
        return False  # a crash between writing the key and the certificate
    if not all(name in present.value for name in names):
        return False
    return certificate.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC)


def _public_bytes(public_key: PublicKeyTypes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _generate(directory: Path, cert: Path, key: Path, hostname: str, names: list[_Name]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = ec.generate_private_key(ec.SECP256R1())
    common_name = hostname if 0 < len(hostname) <= 64 else "postroom"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    public_key = private_key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))  # tolerate clients with a slow clock
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(key, key_pem, 0o600)
    _write_atomically(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write beside ``path``, fsync, rename: a crash leaves the old file or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
        file.write(data)
        file.flush()
        os.fsync(fd)
    os.replace(temporary, path)
