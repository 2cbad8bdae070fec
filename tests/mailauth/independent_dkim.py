"""A second DKIM verifier for the tests, written from RFC 6376 alone (relaxed/relaxed
and simple/simple, rsa-sha256 and ed25519-sha256) on the cryptography library: it
shares no code with dkimpy, so a canonicalization bug in one shows against the other.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

__all__ = ["verify_all"]

_WSP = re.compile(rb"[ \t]+")


def _fields(head: bytes) -> list[bytes]:
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\r\n" + line
        elif line:
            fields.append(line)
    return fields


def _tags(value: bytes) -> dict[bytes, bytes]:
    tags = {}
    for part in value.split(b";"):
        name, eq, content = part.partition(b"=")
        if eq:
            tags[name.strip()] = re.sub(rb"\s+", b"", content) if name.strip() in (
                b"b", b"bh", b"h"
            ) else content.strip()  # fmt: skip
    return tags


def _relaxed_header(field: bytes) -> bytes:  # RFC 6376 3.4.2
    name, _, value = field.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip()
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:  # RFC 6376 3.4.4
    lines = [_WSP.sub(b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def _simple_body(body: bytes) -> bytes:  # RFC 6376 3.4.3
    while body.endswith(b"\r\n\r\n"):
        body = body[:-2]
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def _verify_one(
    fields: list[bytes], body: bytes, field: bytes, key_record: Callable[[str], bytes]
) -> bool:
    tags = _tags(field.partition(b":")[2])
    header_c, _, body_c = tags.get(b"c", b"simple/simple").partition(b"/")
    body_c = body_c or b"simple"
    canon_body = _relaxed_body(body) if body_c == b"relaxed" else _simple_body(body)
    if base64.b64encode(hashlib.sha256(canon_body).digest()) != tags[b"bh"]:
        return False
    canon = _relaxed_header if header_c == b"relaxed" else (lambda f: f)
    unused = list(fields)
    signed = b""
    for name in tags[b"h"].lower().split(b":"):  # each name takes the last unused field
        for candidate in reversed(unused):
            if candidate.partition(b":")[0].strip().lower() == name:
                signed += canon(candidate) + b"\r\n"
                unused.remove(candidate)
                break
    blanked = re.sub(rb"(\bb=)[^;]*", rb"\1", field, count=1)
    signed += canon(blanked)
    record = _tags(key_record(f"{tags[b's'].decode()}._domainkey.{tags[b'd'].decode()}"))
    public = base64.b64decode(re.sub(rb"\s+", b"", record[b"p"]))
    signature = base64.b64decode(tags[b"b"])
    try:
        if tags[b"a"] == b"ed25519-sha256":
            key = ed25519.Ed25519PublicKey.from_public_bytes(public)
            key.verify(signature, hashlib.sha256(signed).digest())  # RFC 8463 3
        else:
            rsa_key = load_der_public_key(public)
            assert isinstance(rsa_key, rsa.RSAPublicKey)
            rsa_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def verify_all(message: bytes, key_record: Callable[[str], bytes]) -> list[bool]:
    """One verdict per DKIM-Signature field, top down; ``key_record`` gives the TXT."""
    head, _, body = message.partition(b"\r\n\r\n")
    fields = _fields(head)
    return [
        _verify_one(fields, body, f, key_record)
        for f in fields
        if f.partition(b":")[0].strip().lower() == b"dkim-signature"
    ]
