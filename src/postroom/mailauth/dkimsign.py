"""DKIM signing on dkimpy (RFC 6376, RFC 8463 for Ed25519): the part of ``mailauth.dkim``
that needs dkimpy, cryptography and PyNaCl, loaded when a message is first signed or
read for its signatures, so that a process that signs nothing (an accept worker taking
mail from outside) does not carry them. ``mailauth.dkim`` gives these names too."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import dkim
import nacl.encoding
import nacl.signing
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding as asym_padding
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import HASH_ALGORITHMS

from postroom.mailauth.dkim import ALGORITHMS, OVERSIGNED, SIGNED_HEADERS, DkimKey, Signature

__all__ = ["load_private", "sign_message", "signed_header_list"]


def signed_header_list(message: bytes) -> list[bytes]:
    """``h=``: each signed header once per instance present, oversigned ones once more."""
    headers, _ = dkim.rfc822_parse(message)
    return _signed_names(headers)


def _signed_names(headers: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    present: dict[str, int] = {}
    for field, _value in headers:
        key = field.decode("ascii", "replace").lower()
        present[key] = present.get(key, 0) + 1
    names: list[bytes] = []
    for name in SIGNED_HEADERS:
        count = present.get(name, 0)
        if count:
            names.extend([name.encode()] * (count + (name in OVERSIGNED)))
    return names


class _Signer(dkim.DKIM):  # type: ignore[misc]  # dkimpy is untyped
    """dkimpy's DKIM with ``t=`` given (its sign() reads the wall clock). One signer
    serves every key of a message: the message is parsed once, and its body
    canonicalized and hashed once per hash (RSA and Ed25519 both hash with SHA-256)."""

    def __init__(self, message: bytes) -> None:
        super().__init__(message, linesep=b"\r\n")
        self._body_hashes: dict[tuple[bytes, object], bytes] = {}  # by policy and hash

    def _body_hash(self, policy: CanonicalizationPolicy) -> bytes:
        key = (policy.to_c_value(), self.hasher)
        bodyhash = self._body_hashes.get(key)
        if bodyhash is None:
            body = policy.canonicalize_body(self.body)
            bodyhash = base64.b64encode(self.hasher(body).digest())
            self._body_hashes[key] = bodyhash
        return bodyhash

    def sign_at(
        self, key: DkimKey, pk: object, include: Sequence[bytes], timestamp: int
    ) -> bytes:  # mirrors dkim.DKIM.sign with relaxed/relaxed, no l=, no i= beyond the default
        self.signature_algorithm = ALGORITHMS[key.algorithm]
        policy = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        headers = tuple(x.lower() for x in include)
        self.include_headers = headers
        self.hasher = HASH_ALGORITHMS[self.signature_algorithm]
        bodyhash = self._body_hash(policy)
        domain = key.domain.encode()
        fields = [
            (b"v", b"1"),
            (b"a", self.signature_algorithm),
            (b"c", policy.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", key.selector.encode()),
            (b"t", str(timestamp).encode()),
            (b"h", b" : ".join(headers)),
            (b"bh", bodyhash),
            (b"b", b"0" * 60),  # placeholder, so b= folds onto its own line
        ]
        value: bytes = self.gen_header(fields, headers, policy, b"DKIM-Signature", pk)
        return b"DKIM-Signature: " + value

    def gen_header(  # noqa: PLR0917 - dkimpy's signature
        self,
        fields: list[tuple[bytes, bytes]],
        include_headers: Sequence[bytes],
        canon_policy: CanonicalizationPolicy,
        header_name: bytes,
        pk: object,
        standardize: bool = False,
    ) -> bytes:
        """dkimpy's gen_header, with RSA signing done by the cryptography library (dkimpy
        exponentiates in Python: ten times slower). PKCS#1 v1.5 is deterministic, so the
        signature is the same bytes."""
        if not isinstance(pk, rsa.RSAPrivateKey):
            value: bytes = super().gen_header(
                fields, include_headers, canon_policy, header_name, pk, standardize
            )
            return value
        header_value = dkim.fold(b"; ".join(b"=".join(x) for x in fields), len(header_name))
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        digest = dkim.HashThrough(self.hasher(), self.debug_content)
        headers = canon_policy.canonicalize_headers(self.headers)
        self.signed_headers = dkim.hash_headers(
            digest, canon_policy, headers, include_headers, (header_name, b" " + header_value),
            dict(fields),
        )  # fmt: skip
        signature = pk.sign(digest.digest(), asym_padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        fields = [(k, base64.b64encode(signature) if k == b"b" else v) for k, v in fields]
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return bytes(dkim.fold(header_value, namelen=len(header_name), linesep=self.linesep))


def load_private(key: DkimKey) -> object:
    """The key for signing: cryptography's RSA key, or PyNaCl's Ed25519 one (dkimpy's)."""
    if key.algorithm == "rsa":
        return serialization.load_pem_private_key(key.private(), password=None)
    return nacl.signing.SigningKey(key.private().strip(), encoder=nacl.encoding.Base64Encoder)


def sign_message(
    message: bytes,
    keys: Sequence[DkimKey],
    timestamp: float,
    include: Sequence[bytes] | None = None,
    load: Callable[[DkimKey], object] = load_private,
) -> list[Signature]:
    """One signature per key, each over the message as given (they do not sign each
    other); ``include``: the h= list, by default ``signed_header_list(message)``."""
    signer = _Signer(message)
    include = _signed_names(signer.headers) if include is None else include
    signatures = []
    for key in keys:
        header = signer.sign_at(key, load(key), include, int(timestamp))
        if not header.endswith(b"\r\n"):
            header += b"\r\n"
        signatures.append(
            Signature(header, ALGORITHMS[key.algorithm].decode(), key.selector, key.domain)
        )
    return signatures
