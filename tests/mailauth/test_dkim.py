"""DKIM keys and signing: the RFC 8463 example reproduced, keys and records, and our
signatures checked by dkimpy's verifier reading the keys from the loopback DNS server."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import dkim
import dns.resolver
import pytest

from postroom.mailauth.dkim import (
    Algorithm,
    DkimKey,
    DkimKeyError,
    DkimSigner,
    KeyRing,
    record_strings,
)
from postroom.mailauth.dkimsign import sign_message, signed_header_list
from postroom.mailauth.dkimsummary import signature_summary
from tests.mailauth.independent_dkim import verify_all
from tests.support.dns_server import DnsServer

# RFC 8463 Appendix A: the Ed25519 key, the message and its signature.
RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_PUBLIC = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_MESSAGE = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n"
)
RFC8463_B = (
    "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="
)
RFC8463_H = [b"from", b"to", b"subject", b"date", b"message-id", b"from", b"subject", b"date"]

MESSAGE = (
    b"From: App <app@example.test>\r\n"
    b"To: friend@remote.test\r\n"
    b"Cc: other@remote.test\r\n"
    b"Subject: Receipt\r\n"
    b"Date: Sun, 29 Nov 2026 05:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Mailer: not signed\r\n"
    b"\r\n"
    b"Thanks for your order.\r\n"
)
NOW = 1_795_000_000.0


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer() as server:
        yield server


def publish(server: DnsServer, key: DkimKey) -> None:
    server.set(key.record_name, "TXT", record_strings(key.record()))


def dkimpy_verify(server: DnsServer, message: bytes, index: int = 0) -> bool:
    """dkimpy's own verifier, reading TXT records from the DNS server with dnspython."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def txt(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            answer = resolver.resolve(name.decode(), "TXT")
        except dns.resolver.NXDOMAIN:
            return None
        return b"".join(next(iter(answer)).strings)

    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=txt))
    except dkim.DKIMException:  # e.g. the body hash does not match
        return False


def rfc8463_key(tmp_path: Path) -> DkimKey:
    folder = tmp_path / "dkim" / "football.example.com"
    folder.mkdir(parents=True)
    path = folder / "brisbane.ed25519.key"
    path.write_text(RFC8463_SEED + "\n")
    return DkimKey("football.example.com", "brisbane", "ed25519", path)


def test_rfc8463_example_signature_reproduces(tmp_path: Path) -> None:
    key = rfc8463_key(tmp_path)
    assert key.record() == f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}"
    (signature,) = sign_message(RFC8463_MESSAGE, [key], 1528637909, include=RFC8463_H)
    tags = dict(dkim.util.parse_tag_value(signature.header.split(b":", 1)[1]))
    assert tags[b"bh"] == b"2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
    assert re.sub(rb"\s+", b"", tags[b"b"]).decode() == RFC8463_B
    assert tags[b"t"] == b"1528637909"


def test_rfc8463_example_verifies(tmp_path: Path, dns_server: DnsServer) -> None:
    key = rfc8463_key(tmp_path)
    publish(dns_server, key)
    (signature,) = sign_message(RFC8463_MESSAGE, [key], 1528637909, include=RFC8463_H)
    assert dkimpy_verify(dns_server, signature.header + RFC8463_MESSAGE)
    assert not dkimpy_verify(dns_server, signature.header + RFC8463_MESSAGE.replace(b"Hi.", b"Ho."))


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_signature_verifies_with_dkimpy(
    tmp_path: Path, dns_server: DnsServer, algorithm: Algorithm
) -> None:
    keys = KeyRing(tmp_path)
    key = keys.generate("example.test", "sel1", algorithm, 1024 if algorithm == "rsa" else 0)
    publish(dns_server, key)
    signatures = DkimSigner(keys).sign(MESSAGE, NOW, domain="example.test")
    assert [str(s) for s in signatures] == [f"{algorithm}-sha256 s=sel1 d=example.test"]
    signed = signatures[0].header + MESSAGE
    assert dkimpy_verify(dns_server, signed)
    tags = dict(dkim.util.parse_tag_value(signatures[0].header.split(b":", 1)[1]))
    assert tags[b"t"] == str(int(NOW)).encode()  # the injected clock
    assert tags[b"c"] == b"relaxed/relaxed"
    assert b"l" not in tags
    # Another Subject added on the way breaks it: Subject is oversigned.
    assert not dkimpy_verify(dns_server, signed.replace(b"Subject:", b"Subject: Win\r\nSubject:"))


def test_dual_signing_rsa_and_ed25519(tmp_path: Path, dns_server: DnsServer) -> None:
    keys = KeyRing(tmp_path)
    for key in (
        keys.generate("example.test", "e1", "ed25519"),
        keys.generate("example.test", "r1", "rsa", 1024),
    ):
        publish(dns_server, key)
    signatures = DkimSigner(keys).sign(MESSAGE, NOW, domain="example.test")
    assert [s.algorithm for s in signatures] == ["rsa-sha256", "ed25519-sha256"]
    signed = b"".join(s.header for s in signatures) + MESSAGE
    assert dkimpy_verify(dns_server, signed, 0)
    assert dkimpy_verify(dns_server, signed, 1)
    assert signature_summary(signed) == (
        "rsa-sha256 s=r1 d=example.test, ed25519-sha256 s=e1 d=example.test"
    )
    assert signature_summary(MESSAGE) == "none"


def test_signed_headers_present_only_and_oversigned() -> None:
    names = signed_header_list(MESSAGE)
    assert names.count(b"from") == 2
    assert names.count(b"subject") == 2
    assert names.count(b"to") == 2
    assert names.count(b"content-type") == 2
    assert b"reply-to" not in names  # not present: not listed
    assert b"x-mailer" not in names
    assert b"received" not in names


def test_no_key_no_signature(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("other.test", "s1", "ed25519")
    assert DkimSigner(keys).sign(MESSAGE, NOW, domain="example.test") == []
    assert not DkimSigner(keys).wants("example.test")
    assert DkimSigner(keys).wants("other.test")
    assert DkimSigner(keys).sign(MESSAGE, NOW, domain="[192.0.2.1]") == []


@pytest.mark.parametrize(
    "message",
    [
        b"From: a@example.test\r\nno colon\r\n\r\nbody\r\n",
        b" folded first\r\nFrom: a@example.test\r\n\r\nbody\r\n",
        b"just a body\r\n",
    ],
)
def test_a_header_dkimpy_cannot_read_is_left_unsigned_not_raised(
    tmp_path: Path, message: bytes
) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "s1", "ed25519")
    signer = DkimSigner(keys)
    assert signer.sign(message, NOW, domain="example.test") == []


def test_keygen_files_and_records(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    key = keys.generate("Example.TEST", "s1", "rsa", 2048)
    assert key.path == tmp_path / "dkim" / "example.test" / "s1.rsa.key"
    assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert key.active
    value = key.record()
    assert value.startswith("v=DKIM1; k=rsa; p=")
    public = base64.b64decode(value.split("p=")[1])
    assert len(public) > 256  # 2048-bit SubjectPublicKeyInfo
    quoted = record_strings(value)
    parts = quoted.split('" "')
    assert len(parts) == 2
    assert all(len(p.strip('"')) <= 255 for p in parts)
    assert "".join(p.strip('"') for p in parts) == value
    ed = keys.generate("example.test", "e1", "ed25519")
    assert ed.record().startswith("v=DKIM1; k=ed25519; p=")
    assert len(base64.b64decode(ed.record().split("p=")[1])) == 32


def test_keygen_refuses_bad_input(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "s1", "ed25519")
    with pytest.raises(DkimKeyError, match="already has a key"):
        keys.generate("example.test", "s1", "rsa")
    with pytest.raises(DkimKeyError, match="not a domain"):
        keys.generate("not a domain", "s2", "rsa")
    with pytest.raises(DkimKeyError, match="not a selector"):
        keys.generate("example.test", "bad_selector", "rsa")
    with pytest.raises(DkimKeyError, match="1024 to 8192"):
        keys.generate("example.test", "s3", "rsa", 512)
    with pytest.raises(DkimKeyError, match="no key"):
        keys.activate("example.test", "nope")


def test_rotation_keeps_the_old_key_until_activated(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    now = 1_795_000_000.0  # November 2026
    first = keys.generate(
        "example.test", keys.next_selector("example.test", "rsa", now), "rsa", 1024
    )
    assert first.selector == "s202611"
    second = keys.generate(
        "example.test", keys.next_selector("example.test", "rsa", now), "rsa", 1024
    )
    assert second.selector == "s202611-2"
    assert not second.active
    assert [k.selector for k in keys.signing_keys("example.test")] == ["s202611"]
    keys.activate("example.test", "s202611-2")
    assert [k.selector for k in keys.signing_keys("example.test")] == ["s202611-2"]
    assert keys.next_selector("example.test", "ed25519", now) == "e202611"


# RFC 8463 Appendix A.3 as published: both signatures, and A.2's key records.
RFC8463_SIGNED = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n" + RFC8463_MESSAGE
)
RFC8463_RECORDS = {
    "brisbane._domainkey.football.example.com": f"v=DKIM1; k=ed25519; p={RFC8463_PUBLIC}",
    "test._domainkey.football.example.com": (
        "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
        "iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
        "DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
        "Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
    ),
}


def test_the_second_verifier_accepts_the_rfc8463_example() -> None:
    """The test verifier is right: it accepts RFC 8463's own signatures."""
    lookup = RFC8463_RECORDS.__getitem__
    assert verify_all(RFC8463_SIGNED, lambda name: lookup(name).encode()) == [True, True]
    tampered = RFC8463_SIGNED.replace(b"Is dinner ready?", b"Is dinner ready!")
    assert verify_all(tampered, lambda name: lookup(name).encode()) == [False, False]


def test_our_signatures_pass_the_second_verifier(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "r1", "rsa", 2048)
    keys.generate("example.test", "e1", "ed25519")
    records = {k.record_name: k.record().encode() for k in keys.keys("example.test")}
    folded = MESSAGE.replace(b"Subject: Receipt", b"Subject:  Receipt\r\n\t for  you ")
    signed = (
        b"".join(s.header for s in DkimSigner(keys).sign(folded, NOW, domain="example.test"))
        + folded
    )
    assert verify_all(signed, records.__getitem__) == [True, True]


def test_each_signature_of_a_dual_signed_message_is_the_one_made_alone(tmp_path: Path) -> None:
    """One signer serves both keys (one parse, one body hash): the bytes must be those
    of a signature made with that key alone (both algorithms are deterministic)."""
    keys = KeyRing(tmp_path)
    both = [
        keys.generate("example.test", "r1", "rsa", 1024),
        keys.generate("example.test", "e1", "ed25519"),
    ]
    together = sign_message(MESSAGE, both, NOW)
    alone = [sign_message(MESSAGE, [key], NOW)[0] for key in both]
    assert [s.header for s in together] == [s.header for s in alone]


# The signer remembers each domain's signing keys by the times of its folder and its
# active.<alg> markers: every change the CLI or an administrator makes must be seen.


def _age(folder: Path, seconds: float = 60.0) -> None:
    """The folder and its files as if untouched for ``seconds``: the signer keeps them."""
    then = time.time() - seconds
    for path in (*folder.iterdir(), folder):
        os.utime(path, (then, then))


def _selectors(signer: DkimSigner) -> list[str]:
    return [s.selector for s in signer.sign(MESSAGE, NOW, domain="example.test")]


class _CountingRing(KeyRing):
    reads = 0

    def signing_keys(self, domain: str) -> list[DkimKey]:
        self.reads += 1
        return super().signing_keys(domain)


def test_a_signer_reads_a_still_folder_once(tmp_path: Path) -> None:
    keys = _CountingRing(tmp_path)
    keys.generate("example.test", "e1", "ed25519")
    _age(keys.folder("example.test"))
    signer = DkimSigner(keys)
    for _ in range(3):
        assert signer.wants("example.test")
        assert _selectors(signer) == ["e1"]
    assert keys.reads == 1


def test_a_signer_sees_a_key_activated_after_it_remembered_the_keys(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "e1", "ed25519")
    keys.generate("example.test", "e2", "ed25519")  # made, not active
    _age(keys.folder("example.test"))
    signer = DkimSigner(keys)
    assert _selectors(signer) == ["e1"]
    keys.activate("example.test", "e2")
    assert _selectors(signer) == ["e2"]
    keys.generate("example.test", "r1", "rsa", 1024)  # the first RSA key: active at once
    assert _selectors(signer) == ["r1", "e2"]


def test_a_signer_sees_a_marker_rewritten_in_place(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "e1", "ed25519")
    keys.generate("example.test", "e2", "ed25519")
    folder = keys.folder("example.test")
    _age(folder)
    signer = DkimSigner(keys)
    assert _selectors(signer) == ["e1"]
    folder_time = os.stat(folder).st_mtime_ns
    (folder / "active.ed25519").write_text("e2\n")  # by hand: the folder's time stays
    assert os.stat(folder).st_mtime_ns == folder_time
    assert _selectors(signer) == ["e2"]


def test_a_signer_sees_keys_removed_and_made_anew(tmp_path: Path) -> None:
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "e1", "ed25519")
    _age(keys.folder("example.test"))
    signer = DkimSigner(keys)
    assert signer.wants("example.test")
    shutil.rmtree(keys.folder("example.test"))
    assert not signer.wants("example.test")
    assert _selectors(signer) == []
    keys.generate("example.test", "e3", "ed25519")
    assert signer.wants("example.test")
    assert _selectors(signer) == ["e3"]


def test_keys_changed_within_a_timestamp_tick_are_seen(tmp_path: Path) -> None:
    """A change made within the file system's timestamp granularity of the last one
    leaves every time as it was: a folder changed that recently is never remembered."""
    keys = KeyRing(tmp_path)
    keys.generate("example.test", "e1", "ed25519")
    keys.generate("example.test", "e2", "ed25519")
    folder = keys.folder("example.test")
    times = {path: os.stat(path).st_mtime_ns for path in (*folder.iterdir(), folder)}
    signer = DkimSigner(keys)
    assert _selectors(signer) == ["e1"]
    keys.activate("example.test", "e2")
    for path, ns in times.items():  # as if the clock had not ticked since
        os.utime(path, ns=(ns, ns))
    assert _selectors(signer) == ["e2"]


def test_a_signer_remembers_a_bounded_number_of_domains(tmp_path: Path) -> None:
    signer = DkimSigner(KeyRing(tmp_path))
    for n in range(3000):
        assert not signer.wants(f"d{n}.example.test")
    assert len(signer._signing) <= 1024
