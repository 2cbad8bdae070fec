"""AWS Signature Version 4 checked from the spec with hashlib and hmac alone, so a test
of postroom's signing does not trust the library that signs.

https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = ["SignatureProblem", "verify"]

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9;-]+), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


class SignatureProblem(Exception):
    pass


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def verify(
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],  # names lowercased
    body: bytes,
    secrets: Mapping[str, str],  # access key id -> secret access key
    region: str,
    service: str,
    now: datetime,
    skew: float = 300.0,
) -> str:
    """The access key id of a correctly signed request; ``SignatureProblem`` otherwise."""
    found = _AUTH.match(headers.get("authorization", ""))
    if found is None:
        raise SignatureProblem("no AWS4-HMAC-SHA256 Authorization header")
    if found["key"] not in secrets:
        raise SignatureProblem("unknown access key id")
    if (found["region"], found["service"]) != (region, service):
        raise SignatureProblem(f"scope {found['region']}/{found['service']}")
    stamp = headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureProblem("X-Amz-Date missing or malformed") from None
    if stamp[:8] != found["date"]:
        raise SignatureProblem("credential date differs from X-Amz-Date")
    if abs((now - when).total_seconds()) > skew:
        raise SignatureProblem("request time too far from ours")
    signed = found["signed"].split(";")
    if signed != sorted(signed) or not {"host", "x-amz-date"} <= set(signed):
        raise SignatureProblem("host and x-amz-date must be signed, names sorted")
    canonical = "\n".join(
        [
            method,
            "/".join(quote(segment, safe="-_.~") for segment in path.split("/")),
            "&".join(sorted(query.split("&"))) if query else "",
            "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in signed),
            found["signed"],
            hashlib.sha256(body).hexdigest(),
        ]
    )
    scope = f"{found['date']}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + secrets[found["key"]]).encode()
    for part in (found["date"], region, service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, found["signature"]):
        raise SignatureProblem("signature does not match")
    return found["key"]
