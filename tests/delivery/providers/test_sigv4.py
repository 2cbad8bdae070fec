"""postroom's SigV4 signer against AWS's published Signature Version 4 test suite
(credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1, service "service"), and
against the independent verifier the loopback SES stand-in uses."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pytest

from postroom.delivery.mailers.api.sigv4 import Credentials, canonical_request, sign
from tests.delivery.providers.sigv4 import SignatureProblem, verify

SUITE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
WHEN = datetime(2015, 8, 30, 12, 36, tzinfo=UTC)
HOST = "example.amazonaws.com"
EMPTY = hashlib.sha256(b"").hexdigest()
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Vector = tuple[str, str, str, list[tuple[str, str]], dict[str, str], bytes, str, str]

# name, method, path, query, headers, body, signed headers, signature (from the suite)
VECTORS: list[Vector] = [
    ("get-vanilla", "GET", "/", [], {}, b"", "host;x-amz-date",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("post-vanilla", "POST", "/", [], {}, b"", "host;x-amz-date",
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
    ("get-vanilla-query-order-key-case", "GET", "/",
     [("Param2", "value2"), ("Param1", "value1")], {}, b"", "host;x-amz-date",
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("get-header-value-trim", "GET", "/", [],
     {"My-Header1": " value1", "My-Header2": ' "a   b   c"'}, b"",
     "host;my-header1;my-header2;x-amz-date",
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"),
    ("get-utf8", "GET", "/\u1234", [], {}, b"", "host;x-amz-date",
     "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"),
    ("get-space", "GET", "/example space/", [], {}, b"", "host;x-amz-date",
     "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"),
    ("post-x-www-form-urlencoded", "POST", "/", [], FORM, b"Param1=value1",
     "content-type;host;x-amz-date",
     "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"),
]  # fmt: skip


@pytest.mark.parametrize("vector", VECTORS, ids=[vector[0] for vector in VECTORS])
def test_the_aws_test_suite(vector: Vector) -> None:
    _, method, path, query, headers, body, signed, signature = vector
    added = sign(
        method, HOST, path=path, query=query, headers=headers, body=body,
        credentials=SUITE, region="us-east-1", service="service", when=WHEN,
    )  # fmt: skip
    assert added == {
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
        f"aws4_request, SignedHeaders={signed}, Signature={signature}",
    }


def test_the_canonical_request_of_the_suites_query_order_and_header_trim() -> None:
    canonical, signed = canonical_request(
        "GET",
        "/",
        [("Param2", "value2"), ("Param1", "value1")],
        {"Host": HOST, "My-Header2": ' "a   b   c"', "X-Amz-Date": "20150830T123600Z"},
        b"",
    )
    assert canonical == (
        f'GET\n/\nParam1=value1&Param2=value2\nhost:{HOST}\nmy-header2:"a b c"\n'
        f"x-amz-date:20150830T123600Z\n\nhost;my-header2;x-amz-date\n{EMPTY}"
    )
    assert signed == "host;my-header2;x-amz-date"


def test_an_ses_request_passes_the_stand_ins_verifier_and_a_changed_body_fails() -> None:
    body = b'{"Content": {"Raw": {"Data": "U3ViamVjdDogaGkNCg0KaGkNCg=="}}}'
    headers = {"Content-Type": "application/json"}
    added = sign(
        "POST", "127.0.0.1:8443", path="/v2/email/outbound-emails", query=[],
        headers=headers, body=body, credentials=SUITE, region="eu-west-1", service="ses", when=WHEN,
    )  # fmt: skip
    received = {"host": "127.0.0.1:8443", "content-type": "application/json"}
    received |= {name.lower(): value for name, value in added.items()}

    def check(body: bytes) -> str:
        return verify(
            method="POST",
            path="/v2/email/outbound-emails",
            query="",
            headers=received,
            body=body,
            secrets={SUITE.access_key_id: SUITE.secret_access_key},
            region="eu-west-1",
            service="ses",
            now=WHEN,
        )

    assert check(body) == "AKIDEXAMPLE"
    with pytest.raises(SignatureProblem, match="does not match"):
        check(body.replace(b"Raw", b"raw"))


def test_the_secret_never_shows_in_a_repr() -> None:
    assert "EXAMPLEKEY" not in repr(SUITE)
