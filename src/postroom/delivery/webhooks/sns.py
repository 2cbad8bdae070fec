"""Amazon SNS message signatures (how SES events reach us over HTTPS).

SNS signs a canonical text of the message, ``Key\\nValue\\n`` for a fixed list of keys
in order, with RSA: SHA-1 for SignatureVersion 1, SHA-256 for 2. The certificate comes
from ``SigningCertURL``, which must be HTTPS on an SNS host
(``sns.<region>.amazonaws.com``): otherwise anyone could sign with a certificate of
their own. Certificates are cached by URL; a certificate out of its validity period at
``now`` is refused.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import urlsplit

# httpx (and the command-line tools it loads with it) when a certificate is fetched, and
# cryptography (about 7 MiB mapped at its import) when a signature is checked: the API
# imports this module whether or not an SES mailer is configured.
if TYPE_CHECKING:
    import httpx
    from cryptography import x509

__all__ = [
    "DEFAULT_CERT_HOSTS",
    "CertificateError",
    "CertificateSource",
    "SnsCertificates",
    "string_to_sign",
    "verify",
]

# netloc (host, and port if any) of certificate URLs we fetch from; real SNS URLs have none.
DEFAULT_CERT_HOSTS: Final = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?")

_KEYS: Final = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_KEYS["UnsubscribeConfirmation"] = _KEYS["SubscriptionConfirmation"]
_HASHES: Final = {"1": "SHA1", "2": "SHA256"}  # cryptography's names, by SignatureVersion
_MAX_CERT_BYTES: Final = 64 * 1024


class CertificateError(Exception):
    """The certificate could not be had from that URL (or may not be)."""


class CertificateSource(Protocol):
    async def certificate(self, url: str) -> x509.Certificate: ...


class SnsCertificates:
    """Fetches signing certificates from allowed hosts over HTTPS, caching a few."""

    def __init__(
        self,
        *,
        client: httpx.AsyncClient | None = None,
        allowed_hosts: re.Pattern[str] = DEFAULT_CERT_HOSTS,
        timeout: float = 10.0,
        max_cached: int = 16,
    ) -> None:
        self._client = client
        self._allowed = allowed_hosts
        self._timeout = timeout
        self._max_cached = max_cached
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()

    def allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        return parts.scheme == "https" and self._allowed.fullmatch(parts.netloc) is not None

    async def certificate(self, url: str) -> x509.Certificate:
        if not self.allowed(url):
            raise CertificateError(f"not an SNS certificate URL: {url!r}")
        cached = self._cache.get(url)
        if cached is not None:
            self._cache.move_to_end(url)
            return cached
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(await self._fetch(url))
        self._cache[url] = cert
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)
        return cert

    async def _fetch(self, url: str) -> bytes:
        import httpx

        try:
            if self._client is not None:
                response = await self._client.get(url, timeout=self._timeout)
            else:
                async with httpx.AsyncClient(follow_redirects=False) as client:
                    response = await client.get(url, timeout=self._timeout)
        except httpx.HTTPError as exc:
            raise CertificateError(f"fetching {url}: {type(exc).__name__}") from None
        if response.status_code != 200 or len(response.content) > _MAX_CERT_BYTES:
            raise CertificateError(f"fetching {url}: HTTP {response.status_code}")
        return response.content


def string_to_sign(message: dict[str, Any]) -> bytes | None:
    """The canonical text SNS signed; None for an unknown message Type."""
    keys = _KEYS.get(str(message.get("Type")))
    if keys is None:
        return None
    lines = [f"{key}\n{message[key]}\n" for key in keys if isinstance(message.get(key), str)]
    return "".join(lines).encode()


async def verify(message: dict[str, Any], certificates: CertificateSource, *, now: float) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    algorithm = _HASHES.get(str(message.get("SignatureVersion")))
    digest = getattr(hashes, algorithm) if algorithm is not None else None
    signed = string_to_sign(message)
    url, signature = message.get("SigningCertURL"), message.get("Signature")
    if digest is None or signed is None or not isinstance(url, str):
        return False
    try:
        raw = base64.b64decode(str(signature), validate=True)
        cert = await certificates.certificate(url)
    except (binascii.Error, CertificateError, ValueError):
        return False
    valid = cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp()
    key = cert.public_key()
    if not valid or not isinstance(key, rsa.RSAPublicKey):
        return False
    try:
        key.verify(raw, signed, padding.PKCS1v15(), digest())
    except InvalidSignature:
        return False
    return True
