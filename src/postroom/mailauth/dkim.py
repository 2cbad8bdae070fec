"""DKIM keys and signing (RFC 6376, RFC 8463 for Ed25519), on dkimpy (its calls are in
``dkimsign.py``, loaded when a message is first signed).

Keys live in ``<data_dir>/dkim/<domain>/<selector>.<alg>.key`` (mode 0600): RSA as PKCS#8
PEM, Ed25519 as the base64 of its 32-byte seed (dkimpy's form). A selector names one key
record in DNS (``<selector>._domainkey.<domain>``), so a selector holds one algorithm.
``active.<alg>`` names the selector that signs for that algorithm; with an RSA and an
Ed25519 key active, a message gets both signatures (RFC 8463 6: verifiers that do not
know Ed25519 ignore that one).

Rotation: ``rotate`` makes the next selector's key and prints its record; the old key
keeps signing until ``activate`` switches, once the new record is visible in DNS.
"""

from __future__ import annotations

import base64
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from postroom.errors import PostroomError

__all__ = [
    "ALGORITHMS",
    "SIGNED_HEADERS",
    "Algorithm",
    "DkimKey",
    "DkimKeyError",
    "DkimSigner",
    "KeyRing",
    "Signature",
    "record_strings",
    "zone_line",
]

Algorithm = Literal["rsa", "ed25519"]
ALGORITHMS: dict[Algorithm, bytes] = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}

# What current practice signs (RFC 6376 5.4.1 and M3AAWG's signing guidance): the
# headers a reader sees and MIME needs to render, the thread and list headers.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "mime-version", "content-type", "content-transfer-encoding", "content-id",
    "content-description", "in-reply-to", "references", "list-id", "list-help",
    "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post",
    "list-owner", "list-archive", "resent-date", "resent-from", "resent-to",
    "resent-cc", "resent-message-id",
)  # fmt: skip
# Listed once more than present (RFC 6376 8.15): nobody can add another instance of
# these without breaking the signature.
OVERSIGNED = frozenset(
    ("from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
     "mime-version", "content-type", "content-transfer-encoding", "in-reply-to",
     "references", "list-id", "list-unsubscribe", "list-unsubscribe-post")
)  # fmt: skip

_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")
_KEY_FILE = re.compile(r"^(?P<selector>[a-z0-9-]+)\.(?P<alg>rsa|ed25519)\.key$")


class DkimKeyError(PostroomError):
    """A key operation that cannot be done: bad domain or selector, key exists, none found."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    path: Path
    active: bool = False

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    def private(self) -> bytes:
        return self.path.read_bytes()

    def record(self) -> str:
        """The TXT record value to publish (RFC 6376 3.6.1; RFC 8463 4 for Ed25519)."""
        import nacl.encoding
        import nacl.signing
        from cryptography.hazmat.primitives import serialization

        private = self.private()
        if self.algorithm == "ed25519":
            seed = nacl.signing.SigningKey(private, encoder=nacl.encoding.Base64Encoder)
            public = bytes(seed.verify_key)
        else:
            key = serialization.load_pem_private_key(private, password=None)
            public = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        return f"v=DKIM1; k={self.algorithm}; p={base64.b64encode(public).decode()}"


def record_strings(value: str, size: int = 255) -> str:
    """A TXT value as zone-file quoted strings of at most 255 octets (RFC 1035 3.3.14)."""
    return " ".join(f'"{value[i : i + size]}"' for i in range(0, len(value), size))


def zone_line(key: DkimKey) -> str:
    """The key's record in zone-file form: name, type, value as quoted strings."""
    return f"{key.record_name}. IN TXT {record_strings(key.record())}"


class KeyRing:
    """The DKIM keys under ``<data_dir>/dkim``: create, list, rotate, activate."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "dkim"

    def domains(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def folder(self, domain: str) -> Path:
        """Where ``domain``'s keys are (DkimKeyError: not a name a key could be made for)."""
        return self.root / _domain(domain)

    def keys(self, domain: str) -> list[DkimKey]:
        domain = _domain(domain)
        folder = self.root / domain
        if not folder.is_dir():
            return []
        active = {alg: self._active(domain, alg) for alg in ALGORITHMS}
        found = []
        for path in sorted(folder.iterdir()):
            if match := _KEY_FILE.match(path.name):
                alg: Algorithm = "rsa" if match["alg"] == "rsa" else "ed25519"
                selector = match["selector"]
                found.append(DkimKey(domain, selector, alg, path, active[alg] == selector))
        return found

    def signing_keys(self, domain: str) -> list[DkimKey]:
        """The active key of each algorithm (RSA first, the widely verified one)."""
        return sorted(
            (k for k in self.keys(domain) if k.active), key=lambda k: k.algorithm != "rsa"
        )

    def generate(
        self, domain: str, selector: str, algorithm: Algorithm, bits: int = 2048
    ) -> DkimKey:
        """A new key; it becomes active when its algorithm has no active key yet."""
        domain, selector = _domain(domain), _selector(selector)
        if algorithm == "rsa" and not 1024 <= bits <= 8192:
            raise DkimKeyError(f"RSA keys have 1024 to 8192 bits, not {bits}")
        if any(k.selector == selector for k in self.keys(domain)):
            raise DkimKeyError(f"{domain} already has a key with selector {selector!r}")
        pem = _new_private_key(algorithm, bits)
        folder = self.root / domain
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = folder / f"{selector}.{algorithm}.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
        if self._active(domain, algorithm) is None:
            self.activate(domain, selector)
        return next(k for k in self.keys(domain) if k.selector == selector)

    def rotate(
        self, domain: str, now: float, algorithm: Algorithm | None = None, bits: int = 2048
    ) -> list[DkimKey]:
        """The next key of ``algorithm`` (default: of each algorithm that signs now); the
        current key keeps signing until the new one is activated, after its record is
        published."""
        algorithms = [algorithm] if algorithm else [k.algorithm for k in self.signing_keys(domain)]
        if not algorithms:
            raise DkimKeyError(f"no DKIM keys for {domain}: create one with `dkim keygen`")
        return [
            self.generate(domain, self.next_selector(domain, alg, now), alg, bits)
            for alg in algorithms
        ]

    def activate(self, domain: str, selector: str) -> DkimKey:
        key = next((k for k in self.keys(domain) if k.selector == selector), None)
        if key is None:
            raise DkimKeyError(f"{domain} has no key with selector {selector!r}")
        marker = self.root / key.domain / f"active.{key.algorithm}"
        temporary = marker.with_suffix(".tmp")
        temporary.write_text(selector + "\n")
        temporary.replace(marker)  # atomic: a signer never reads half a name
        return DkimKey(key.domain, key.selector, key.algorithm, key.path, True)

    def next_selector(self, domain: str, algorithm: Algorithm, now: float) -> str:
        """``s<YYYYMM>`` (RSA) or ``e<YYYYMM>`` (Ed25519), with ``-2``, ``-3`` ... when taken."""
        month = datetime.fromtimestamp(now, UTC).strftime("%Y%m")
        base = f"{'s' if algorithm == 'rsa' else 'e'}{month}"
        taken = {k.selector for k in self.keys(domain)}
        selector, n = base, 1
        while selector in taken:
            n += 1
            selector = f"{base}-{n}"
        return selector

    def _active(self, domain: str, algorithm: Algorithm) -> str | None:
        try:
            return (self.root / domain / f"active.{algorithm}").read_text().strip() or None
        except FileNotFoundError:
            return None


def _domain(text: str) -> str:
    try:
        domain = text.strip().rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise DkimKeyError(f"{text!r} is not a domain name") from None
    if not _DOMAIN.match(domain):
        raise DkimKeyError(f"{text!r} is not a domain name")
    return domain


def _selector(text: str) -> str:
    if not _SELECTOR.match(text):
        raise DkimKeyError(f"{text!r} is not a selector (letters, digits and '-', one DNS label)")
    return text


def _new_private_key(algorithm: Algorithm, bits: int) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if algorithm == "ed25519":
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return base64.b64encode(seed) + b"\n"
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


# -- signing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signature:
    header: bytes  # "DKIM-Signature: ...\r\n"
    algorithm: str  # rsa-sha256 | ed25519-sha256
    selector: str
    domain: str

    def __str__(self) -> str:
        return f"{self.algorithm} s={self.selector} d={self.domain}"


class DkimSigner:
    """Signs outgoing messages with a domain's active keys (if it has any).

    The caller names the domain (d=): intake gives the From: domain, and only when the
    message's principal may use it, so no path signs for a domain its sender may not use."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys
        # Parsed keys by file: loading checks an RSA key, which costs more than signing.
        self._loaded: dict[Path, tuple[int, object]] = {}
        # Each domain's signing keys with the version of its folder they were read at:
        # every submitted message asks twice (``wants``, then ``sign``), and reading
        # them (a listing and the markers) costs 60 us where the version costs 3 stats.
        self._signing: dict[str, _DomainKeys] = {}

    def wants(self, domain: str) -> bool:
        """Whether mail signed as ``domain`` gets a signature (it has an active key):
        asked before the whole message is read."""
        return bool(self._keys_of(domain))

    def ready(self, domain: str) -> bool:
        """Whether signing as ``domain`` needs nothing read or parsed first: it has keys,
        each parsed already from its file as it is now (so dkimpy is loaded too)."""
        keys = self._keys_of(domain)
        return bool(keys) and all(self._parsed(key) is not None for key in keys)

    def sign(self, message: bytes, now: float, *, domain: str) -> list[Signature]:
        """The signatures of ``message`` as ``domain`` (d=); none when it has no key, or
        when dkimpy cannot read the header block (intake's clean-up gives it readable
        header blocks only)."""
        keys = self._keys_of(domain)
        if not keys:
            return []
        import dkim

        from postroom.mailauth.dkimsign import sign_message

        try:
            return sign_message(message, keys, now, load=self._load)
        except (dkim.MessageFormatError, IndexError):
            return []

    def _keys_of(self, domain: str) -> list[DkimKey]:
        known = self._signing.get(domain)
        if known is None:
            try:
                folder = self._keys.folder(domain)
            except DkimKeyError:  # not a name a key could be made for (an address literal)
                return []
            paths = (str(folder), *(str(folder / f"active.{alg}") for alg in ALGORITHMS))
        else:
            paths = known.paths
        version = _version(paths)
        if known is not None and known.version == version:
            return known.keys
        keys = self._keys.signing_keys(domain) if version is not None else []
        if version is None or _settled(version):
            if len(self._signing) >= _KNOWN_DOMAINS:
                # Emptied whole (rare): the loop's thread and signing threads both get
                # here, and a clear cannot meet another thread half way.
                self._signing.clear()
            self._signing[domain] = _DomainKeys(paths, version, keys)
        return keys

    def _parsed(self, key: DkimKey) -> object | None:
        """The key parsed from its file as it is now; None when it must be (again)."""
        cached = self._loaded.get(key.path)
        try:
            current = cached is not None and cached[0] == key.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        return cached[1] if cached is not None and current else None

    def _load(self, key: DkimKey) -> object:
        parsed = self._parsed(key)
        if parsed is None:
            from postroom.mailauth.dkimsign import load_private

            version = key.path.stat().st_mtime_ns
            parsed = load_private(key)
            self._loaded[key.path] = (version, parsed)
        return parsed


_KNOWN_DOMAINS = 1024  # domains whose signing keys a signer remembers
# A folder changed this recently may change again within the file system's timestamp
# granularity (a kernel tick) without its times moving: its keys are read each time
# until it has been still this long (as git treats "racily clean" files).
_SETTLE_NS = 2_000_000_000


@dataclass(frozen=True, slots=True)
class _DomainKeys:
    paths: tuple[str, ...]  # the domain's folder, then its active.<alg> markers
    version: tuple[int, ...] | None  # None: the domain has no folder, so no keys
    keys: list[DkimKey]


def _version(paths: tuple[str, ...]) -> tuple[int, ...] | None:
    """What moves whenever a domain's signing keys may have changed: the modification
    times of its folder (a key made or removed, a marker replaced, as ``activate``
    does) and of each ``active.<alg>`` marker (one rewritten in place by hand)."""
    folder, *markers = paths
    try:
        version = [os.stat(folder).st_mtime_ns]
    except FileNotFoundError:
        return None
    for marker in markers:
        try:
            version.append(os.stat(marker).st_mtime_ns)
        except FileNotFoundError:
            version.append(0)
    return tuple(version)


def _settled(version: tuple[int, ...]) -> bool:
    return time.time_ns() - max(version) > _SETTLE_NS
