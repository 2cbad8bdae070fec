"""``postroom mailer authorize`` and the OAuth lines of ``postroom mailer status``, as a
real process against a loopback token endpoint."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.cli.test_cli import ok, one_line_error, postroom
from tests.support.http_fake import FakeHttp, serve
from tests.support.oauth_fake import TokenEndpoint, s256
from tests.support.servers import make_store

REDIRECT = "http://127.0.0.1/"


@pytest.fixture
def endpoint() -> Iterator[tuple[TokenEndpoint, FakeHttp]]:
    tokens = TokenEndpoint()
    with serve(tokens) as server:
        yield tokens, server


@pytest.fixture
def config(tmp_path: Path, endpoint: tuple[TokenEndpoint, FakeHttp]) -> Path:
    _, server = endpoint
    path = tmp_path / "postroom.toml"
    path.write_text(
        f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n'
        "[[mailers]]\n"
        'name = "gmail"\ntype = "gmail"\nclient_id = "client-123"\n'
        'client_secret_env = "GMAIL_SECRET"\n'
        f'token_url = "{server.url}/token"\n'
        "[[mailers]]\n"
        'name = "relay"\ntype = "smtp"\nhost = "smtp.example.net"\n'
    )
    return make_store(path)


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GMAIL_SECRET", "secret-456")


def test_authorize_prints_the_consent_address_and_keeps_the_refresh_token(
    config: Path, tmp_path: Path, endpoint: tuple[TokenEndpoint, FakeHttp]
) -> None:
    tokens, _ = endpoint
    tokens.codes["4/0AbCd"] = REDIRECT
    out = ok(postroom(config, "mailer", "authorize", "gmail", stdin="4/0AbCd\n"))

    url = next(line.strip() for line in out.splitlines() if "accounts.google.com" in line)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith("https://accounts.google.com/o/oauth2/v2/auth?")
    assert query["client_id"] == "client-123"
    assert query["redirect_uri"] == REDIRECT
    assert query["scope"] == "https://www.googleapis.com/auth/gmail.send"
    assert (query["access_type"], query["prompt"], query["response_type"]) == (
        "offline",
        "consent",
        "code",
    )
    path = tmp_path / "data" / "oauth" / "gmail.json"
    assert f"mailer gmail authorized; its refresh token is in {path}" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["refresh_token"] in tokens.refresh_tokens
    assert "secret-456" not in out + path.read_text()
    # PKCE: the code went back with the verifier of the challenge the address carried
    assert query["code_challenge_method"] == "S256"
    assert [s256(v) for v in tokens.verifiers] == [query["code_challenge"]]
    assert sorted(p.name for p in path.parent.iterdir()) == ["gmail.json"]  # none pending


def _consent_query(out: str) -> dict[str, str]:
    url = next(line.strip() for line in out.splitlines() if "accounts.google.com" in line)
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_authorize_takes_the_browser_address_with_code_in_a_later_run(
    config: Path, tmp_path: Path, endpoint: tuple[TokenEndpoint, FakeHttp]
) -> None:
    tokens, _ = endpoint
    first = postroom(config, "mailer", "authorize", "gmail", stdin="\n")  # no code pasted
    assert first.returncode == 1
    query = _consent_query(first.stdout)
    tokens.codes["4/0XyZ"] = REDIRECT
    tokens.challenges["4/0XyZ"] = query["code_challenge"]  # as the consent page saw it

    other = f"{REDIRECT}?state=another&code=4%2F0XyZ"
    assert "another authorization" in one_line_error(
        postroom(config, "mailer", "authorize", "gmail", "--code", other)
    )
    pasted = f"{REDIRECT}?state={query['state']}&code=4%2F0XyZ&scope=gmail.send"
    ok(postroom(config, "mailer", "authorize", "gmail", "--code", pasted))
    assert (tmp_path / "data" / "oauth" / "gmail.json").exists()
    assert not (tmp_path / "data" / "oauth" / "gmail.pending.json").exists()


def test_authorize_refusals_are_one_line(config: Path) -> None:
    line = one_line_error(postroom(config, "mailer", "authorize", "gmail", "--code", "bogus"))
    assert line == (
        "postroom: no authorization of mailer gmail in progress: run it without --code first"
    )
    postroom(config, "mailer", "authorize", "gmail", stdin="\n")  # the address, no code
    line = one_line_error(postroom(config, "mailer", "authorize", "gmail", "--code", "bogus"))
    assert line == (
        "postroom: mailer gmail: the provider refused the authorization code (used, expired,"
        " or for another redirect_uri or authorization): authorize again"
    )
    assert one_line_error(postroom(config, "mailer", "authorize", "relay")) == (
        "postroom: mailer relay (type smtp) does not use OAuth"
    )
    assert one_line_error(postroom(config, "mailer", "authorize", "nope")) == (
        "postroom: no mailer named 'nope'"
    )
    denied = f"{REDIRECT}?error=access_denied"
    assert "access_denied" in one_line_error(
        postroom(config, "mailer", "authorize", "gmail", "--code", denied)
    )


def test_status_shows_the_token_state_in_plain_words(
    config: Path, tmp_path: Path, endpoint: tuple[TokenEndpoint, FakeHttp]
) -> None:
    out = ok(postroom(config, "mailer", "status"))
    assert "not authorized yet: run `postroom mailer authorize gmail`" in out
    tokens, _ = endpoint
    tokens.codes["4/0AbCd"] = REDIRECT
    ok(postroom(config, "mailer", "authorize", "gmail", stdin="4/0AbCd\n"))
    assert "authorized; the access token is valid for" in ok(postroom(config, "mailer", "status"))

    path = tmp_path / "data" / "oauth" / "gmail.json"
    state = json.loads(path.read_text())
    state["failed"] = (
        "the refresh token for mailer gmail was revoked or expired:"
        " run `postroom mailer authorize gmail`"
    )
    path.write_text(json.dumps(state))
    out = ok(postroom(config, "mailer", "status"))
    assert "revoked or expired: run `postroom mailer authorize gmail`" in " ".join(out.split())
