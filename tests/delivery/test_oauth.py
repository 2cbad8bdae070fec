"""OAuth 2.0 for API mailers against a loopback token endpoint, with an injected clock."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from postroom.delivery.mailers.oauth.flow import (
    AccessTokens,
    OAuthConfig,
    OAuthRevoked,
    OAuthUnavailable,
    authorization_url,
    code_from,
    describe,
    exchange_code,
)
from postroom.delivery.mailers.oauth.tokens import (
    PendingAuthorization,
    PendingFile,
    TokenFile,
    TokenState,
    token_path,
)
from tests.conftest import FakeClock
from tests.support.http_fake import FakeHttp, Reply, serve
from tests.support.oauth_fake import TokenEndpoint, s256

REDIRECT = "http://127.0.0.1/"
PENDING = PendingAuthorization(state="st4te", code_verifier="v" * 43)


@pytest.fixture
def endpoint() -> TokenEndpoint:
    return TokenEndpoint()


@pytest.fixture
def server(endpoint: TokenEndpoint) -> Iterator[FakeHttp]:
    with serve(endpoint) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def _endpoint(server: FakeHttp) -> TokenEndpoint:
    assert isinstance(server.handler, TokenEndpoint)
    return server.handler


def _config(server: FakeHttp, **changes: object) -> OAuthConfig:
    values: dict[str, object] = {
        "mailer": "gmail",
        "client_id": "client-123",
        "client_secret": "secret-456",
        "auth_url": "https://accounts.example/o/oauth2/auth",
        "token_url": f"{server.url}/token",
        "scopes": ("https://www.googleapis.com/auth/gmail.send",),
        "redirect_uri": REDIRECT,
        "auth_params": {"access_type": "offline", "prompt": "consent"},
        "timeout": 2.0,
    }
    values.update(changes)
    return OAuthConfig(**values)  # type: ignore[arg-type]


async def _authorized(
    endpoint: TokenEndpoint,
    config: OAuthConfig,
    http: httpx.AsyncClient,
    file: TokenFile,
    now: float,
) -> TokenState:
    endpoint.codes["4/code"] = REDIRECT
    endpoint.challenges["4/code"] = s256(PENDING.code_verifier)
    state = await exchange_code(config, "4/code", PENDING, http, now)
    file.save(state)
    return state


def test_the_authorization_url_asks_for_offline_access_with_a_pkce_challenge(
    server: FakeHttp,
) -> None:
    url = authorization_url(_config(server), PENDING)
    query = parse_qs(urlsplit(url).query)
    assert url.startswith("https://accounts.example/o/oauth2/auth?")
    assert {k: v[0] for k, v in query.items()} == {
        "response_type": "code",
        "client_id": "client-123",
        "redirect_uri": REDIRECT,
        "scope": "https://www.googleapis.com/auth/gmail.send",
        "state": "st4te",
        "code_challenge": s256(PENDING.code_verifier),
        "code_challenge_method": "S256",
        "access_type": "offline",
        "prompt": "consent",
    }


def test_each_authorization_has_its_own_state_and_a_verifier_rfc_7636_accepts() -> None:
    first, second = PendingAuthorization.new(), PendingAuthorization.new()
    assert first.state != second.state and first.code_verifier != second.code_verifier
    for verifier in (first.code_verifier, second.code_verifier):
        assert 43 <= len(verifier) <= 128
        assert set(verifier) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
        )


def test_a_pending_authorization_is_kept_privately_until_removed(tmp_path: Path) -> None:
    pending = PendingFile(tmp_path, "gmail")
    assert pending.load() is None
    pending.save(PENDING)
    assert pending.load() == PENDING
    assert stat.S_IMODE(pending.path.stat().st_mode) == 0o600
    pending.remove()
    assert pending.load() is None


def test_the_code_may_be_pasted_alone_or_in_the_redirected_address() -> None:
    assert code_from("  4/0Abc-def \n", "s") == "4/0Abc-def"
    assert code_from("http://127.0.0.1/?state=s&code=4%2F0Abc&scope=x", "s") == "4/0Abc"
    with pytest.raises(ValueError, match="another authorization"):
        code_from("http://127.0.0.1/?state=other&code=4%2F0Abc", "s")
    with pytest.raises(ValueError, match="access_denied"):
        code_from("http://127.0.0.1/?error=access_denied&state=s", "s")
    with pytest.raises(ValueError, match="no authorization code"):
        code_from("   ", "s")


async def test_the_code_becomes_a_refresh_token_in_a_private_file(
    tmp_path: Path, endpoint: TokenEndpoint, server: FakeHttp, http: httpx.AsyncClient
) -> None:
    file = TokenFile(token_path(tmp_path, "gmail"))
    state = await _authorized(endpoint, _config(server), http, file, 1000.0)
    assert state.refresh_token in endpoint.refresh_tokens
    assert (state.expires_at, state.authorized_at) == (4600.0, 1000.0)
    assert stat.S_IMODE(file.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(file.path.parent.stat().st_mode) == 0o700
    assert file.load() == state
    assert [p.name for p in file.path.parent.iterdir()] == ["gmail.json"]  # no temporary left
    form = server.requests[-1].form()
    assert form["grant_type"] == ["authorization_code"]
    assert form["redirect_uri"] == [REDIRECT]
    assert form["code_verifier"] == [PENDING.code_verifier]


async def test_a_wrong_code_is_refused(server: FakeHttp, http: httpx.AsyncClient) -> None:
    with pytest.raises(OAuthUnavailable, match="refused the authorization code"):
        await exchange_code(_config(server), "never-issued", PENDING, http, 0.0)


async def test_a_code_with_another_authorizations_verifier_is_refused(
    endpoint: TokenEndpoint, server: FakeHttp, http: httpx.AsyncClient
) -> None:
    # What an intercepted code gets whoever exchanges it without this client's verifier.
    endpoint.codes["4/stolen"] = REDIRECT
    endpoint.challenges["4/stolen"] = s256(PENDING.code_verifier)
    other = PendingAuthorization(state=PENDING.state, code_verifier="w" * 43)
    with pytest.raises(OAuthUnavailable, match="refused the authorization code"):
        await exchange_code(_config(server), "4/stolen", other, http, 0.0)


async def test_access_tokens_are_renewed_a_margin_before_they_expire(
    tmp_path: Path,
    endpoint: TokenEndpoint,
    server: FakeHttp,
    http: httpx.AsyncClient,
    fake_clock: FakeClock,
) -> None:
    file = TokenFile(token_path(tmp_path, "gmail"))
    config = _config(server)
    first = await _authorized(endpoint, config, http, file, fake_clock.time())
    tokens = AccessTokens(config, file, clock=fake_clock, http=http, margin=300)

    assert await tokens.token() == first.access_token
    fake_clock.advance(3600 - 301)
    assert await tokens.token() == first.access_token
    assert len(server.requests) == 1  # only the code exchange

    fake_clock.advance(2)  # inside the margin, not yet expired
    renewed = await tokens.token()
    assert renewed != first.access_token and renewed == endpoint.access_tokens[-1]
    assert server.requests[-1].form()["grant_type"] == ["refresh_token"]
    saved = file.load()
    assert saved is not None and saved.access_token == renewed
    assert saved.expires_at == fake_clock.time() + 3600
    assert await tokens.token(renew=True) != renewed  # the API refused it: renew at once


async def test_a_revoked_refresh_token_fails_the_mailer_until_authorized_again(
    tmp_path: Path,
    server: FakeHttp,
    http: httpx.AsyncClient,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = _endpoint(server)
    file = TokenFile(token_path(tmp_path, "gmail"))
    config = _config(server)
    await _authorized(endpoint, config, http, file, fake_clock.time())
    tokens = AccessTokens(config, file, clock=fake_clock, http=http)
    endpoint.revoke_all()
    fake_clock.advance(3600)

    words = (
        "the refresh token for mailer gmail was revoked or expired:"
        " run `postroom mailer authorize gmail`"
    )
    with pytest.raises(OAuthRevoked) as raised:
        await tokens.token()
    assert str(raised.value) == words
    asked = len(server.requests)
    with pytest.raises(OAuthRevoked):
        await tokens.token()
    assert len(server.requests) == asked  # failed: the endpoint is not asked again
    failed = file.load()
    assert failed is not None and failed.failed == words
    assert describe(failed, "gmail", fake_clock.time()) == words
    assert words in caplog.text
    assert "secret-456" not in caplog.text

    again = await _authorized(endpoint, config, http, TokenFile(file.path), fake_clock.time())
    assert await tokens.token() == again.access_token


async def test_refused_client_credentials_are_temporary_and_loud(
    tmp_path: Path,
    server: FakeHttp,
    http: httpx.AsyncClient,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    endpoint = _endpoint(server)
    file = TokenFile(token_path(tmp_path, "gmail"))
    file.save(TokenState(refresh_token="refresh-x"))
    endpoint.refresh_tokens.add("refresh-x")
    tokens = AccessTokens(
        _config(server, client_secret="wrong-secret"), file, clock=fake_clock, http=http
    )
    with pytest.raises(OAuthUnavailable, match="invalid_client"):
        await tokens.token()
    assert "check client_id and client_secret" in caplog.text
    assert "wrong-secret" not in caplog.text
    state = file.load()
    assert state is not None and state.failed is None


@pytest.mark.parametrize("trouble", ["down", "stall", "drop"])
async def test_an_unreachable_token_endpoint_is_temporary(
    tmp_path: Path, http: httpx.AsyncClient, fake_clock: FakeClock, trouble: str
) -> None:
    reply = {
        "down": Reply(503, b"Service Unavailable"),
        "stall": Reply(stall=True),
        "drop": Reply(drop=True),
    }[trouble]
    with serve(lambda _request: reply) as fake:
        file = TokenFile(token_path(tmp_path, "gmail"))
        file.save(TokenState(refresh_token="refresh-x"))
        tokens = AccessTokens(_config(fake, timeout=0.5), file, clock=fake_clock, http=http)
        with pytest.raises(OAuthUnavailable):
            await tokens.token()


async def test_zoho_style_query_parameters_and_its_invalid_code(
    tmp_path: Path, http: httpx.AsyncClient, fake_clock: FakeClock
) -> None:
    endpoint = TokenEndpoint(in_query=True, revoked_error=(200, "invalid_code"))
    endpoint.refresh_tokens.add("1000.refresh")
    with serve(endpoint) as fake:
        config = _config(
            fake,
            mailer="zoho",
            token_params_in_query=True,
            revoked_errors=frozenset({"invalid_code"}),
        )
        file = TokenFile(token_path(tmp_path, "zoho"))
        file.save(TokenState(refresh_token="1000.refresh"))
        tokens = AccessTokens(config, file, clock=fake_clock, http=http)
        assert await tokens.token() == endpoint.access_tokens[-1]
        assert fake.requests[-1].body == b""
        endpoint.revoke_all()
        with pytest.raises(OAuthRevoked, match="mailer zoho was revoked"):
            await tokens.token(renew=True)


async def test_rotated_refresh_tokens_are_kept(
    tmp_path: Path, http: httpx.AsyncClient, fake_clock: FakeClock
) -> None:
    endpoint = TokenEndpoint(rotate=True)
    endpoint.refresh_tokens.add("r0")
    with serve(endpoint) as fake:
        file = TokenFile(token_path(tmp_path, "outlook"))
        file.save(TokenState(refresh_token="r0"))
        tokens = AccessTokens(_config(fake, mailer="outlook"), file, clock=fake_clock, http=http)
        await tokens.token()
        saved = file.load()
        assert saved is not None and saved.refresh_token in endpoint.refresh_tokens
        assert saved.refresh_token != "r0"


def test_status_lines(fake_clock: FakeClock) -> None:
    now = fake_clock.time()
    assert describe(None, "gm", now) == (
        "mailer gm is not authorized yet: run `postroom mailer authorize gm`"
    )
    valid = TokenState("r", access_token="a", expires_at=now + 1800)
    assert describe(valid, "gm", now) == "authorized; the access token is valid for 30 more minutes"
    assert "expired" in describe(TokenState("r", access_token="a", expires_at=now - 1), "gm", now)


async def test_a_token_file_written_by_another_process_is_used(
    tmp_path: Path, server: FakeHttp, http: httpx.AsyncClient, fake_clock: FakeClock
) -> None:
    """Authorizing again while the server runs: its next renewal uses the new token."""
    endpoint = _endpoint(server)
    file = TokenFile(token_path(tmp_path, "gmail"))
    config = _config(server)
    first = await _authorized(endpoint, config, http, file, fake_clock.time())
    tokens = AccessTokens(config, file, clock=fake_clock, http=http)
    assert await tokens.token() == first.access_token

    again = await _authorized(endpoint, config, http, file, fake_clock.time())
    endpoint.refresh_tokens.discard(first.refresh_token)  # the old grant is gone
    fake_clock.advance(3600)
    renewed = await tokens.token()
    assert renewed == endpoint.access_tokens[-1]
    assert server.requests[-1].form()["refresh_token"] == [again.refresh_token]
