"""OAuth 2.0 for API mailers that send as a user (Gmail, Microsoft Graph, Zoho Mail).

``postroom mailer authorize`` runs the authorization-code flow once (RFC 6749 4.1)
with PKCE (RFC 7636, S256: authlib computes the challenge): ``authorization_url`` is
opened by the user, the code comes back pasted, and ``exchange_code`` trades it, with
the code verifier only this client knows, for a refresh token that ``oauth.tokens``
keeps. A code intercepted on its way back (a redirect read by another local program)
is worth nothing without the verifier. The two token requests (a form POST, a JSON
answer) stay ours: authlib's httpx client is deprecated in favour of another HTTP
package, and what is left here is the providers' own (Zoho's parameters in the query,
which errors mean a dead refresh token, the token file shared with the CLI). While
mail flows, ``AccessTokens`` hands the mailer an access token, refreshing it
(RFC 6749 6) a margin before it expires by the injected clock, once at a time.

When the provider refuses the refresh token (``invalid_grant``: revoked, expired,
password changed) nothing but a new authorization helps: the failure is written to
the token file, every attempt defers with failover and says so in plain words, and
``postroom mailer status`` shows the same sentence. Other trouble (the token endpoint
down, slow or refusing our client credentials) is temporary; refused credentials are
logged loudly. No message here ever holds a secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Protocol
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from pydantic import SecretStr

from postroom.clock import Clock
from postroom.config.secrets import MissingSecret, read_secret
from postroom.delivery.mailers.oauth.tokens import PendingAuthorization, TokenFile, TokenState
from postroom.errors import ConfigError

__all__ = [
    "PROVIDERS",
    "REFRESH_MARGIN",
    "AccessTokens",
    "OAuthConfig",
    "OAuthError",
    "OAuthProvider",
    "OAuthRevoked",
    "OAuthSettings",
    "OAuthUnavailable",
    "authorization_url",
    "code_from",
    "describe",
    "exchange_code",
    "not_authorized_message",
    "oauth_config",
    "revoked_message",
]

_log = logging.getLogger("postroom.oauth")

REFRESH_MARGIN: Final = 300.0  # seconds before expiry that an access token is renewed
_DETAIL_LIMIT: Final = 200


@dataclass(frozen=True, slots=True)
class OAuthConfig:
    mailer: str
    client_id: str
    client_secret: str = field(repr=False)
    auth_url: str
    token_url: str
    scopes: tuple[str, ...]
    redirect_uri: str
    # What the provider needs to hand out a refresh token (access_type, prompt).
    auth_params: Mapping[str, str] = field(default_factory=dict)
    # Zoho documents its token parameters in the query string, not the body.
    token_params_in_query: bool = False
    # Token-endpoint "error" codes meaning the refresh token is dead (Zoho: invalid_code).
    revoked_errors: frozenset[str] = frozenset({"invalid_grant"})
    timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class OAuthProvider:
    """What differs between the providers' OAuth servers."""

    auth_params: Mapping[str, str] = field(default_factory=dict)
    token_params_in_query: bool = False
    revoked_errors: frozenset[str] = frozenset({"invalid_grant"})


_OFFLINE: Final = MappingProxyType({"access_type": "offline", "prompt": "consent"})

PROVIDERS: Final[Mapping[str, OAuthProvider]] = MappingProxyType(
    {
        # Google gives a refresh token only for access_type=offline, and again only
        # with prompt=consent.
        "gmail": OAuthProvider(auth_params=_OFFLINE),
        # Microsoft gives one for the offline_access scope (in the default scopes).
        "outlook": OAuthProvider(),
        # Zoho: like Google; parameters in the query; a dead refresh token is
        # "invalid_code" (inferred from its accounts server's answers).
        "zoho": OAuthProvider(
            auth_params=_OFFLINE,
            token_params_in_query=True,
            revoked_errors=frozenset({"invalid_grant", "invalid_code"}),
        ),
    }
)


class OAuthSettings(Protocol):
    """The settings of a mailer that sends with OAuth (``config.providers``)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def client_secret(self) -> SecretStr | None: ...
    @property
    def client_secret_env(self) -> str | None: ...
    @property
    def auth_url(self) -> str: ...
    @property
    def token_url(self) -> str: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def redirect_uri(self) -> str: ...
    @property
    def timeout(self) -> float: ...


def oauth_config(settings: OAuthSettings, environ: Mapping[str, str]) -> OAuthConfig:
    """ConfigError when the client secret is missing (or its variable unset)."""
    try:
        secret = read_secret(
            "client_secret", settings.client_secret, settings.client_secret_env, environ
        )
    except MissingSecret as exc:
        raise ConfigError(f"mailers.{settings.name}.{exc.key}", exc.problem) from None
    provider = PROVIDERS.get(settings.type, OAuthProvider())
    return OAuthConfig(
        mailer=settings.name,
        client_id=settings.client_id,
        client_secret=secret,
        auth_url=settings.auth_url,
        token_url=settings.token_url,
        scopes=settings.scopes,
        redirect_uri=settings.redirect_uri,
        auth_params=provider.auth_params,
        token_params_in_query=provider.token_params_in_query,
        revoked_errors=provider.revoked_errors,
        timeout=settings.timeout,
    )


class OAuthError(Exception):
    """Why no access token could be had; the text is safe to log and to show."""


class OAuthRevoked(OAuthError):
    """Only ``postroom mailer authorize`` helps."""


class OAuthUnavailable(OAuthError):
    """Temporary, or a configuration problem the operator must fix."""


def revoked_message(mailer: str) -> str:
    return (
        f"the refresh token for mailer {mailer} was revoked or expired:"
        f" run `postroom mailer authorize {mailer}`"
    )


def not_authorized_message(mailer: str) -> str:
    return f"mailer {mailer} is not authorized yet: run `postroom mailer authorize {mailer}`"


def authorization_url(config: OAuthConfig, pending: PendingAuthorization) -> str:
    params = {
        "response_type": "code",
        "client_id": config.client_id,
        "redirect_uri": config.redirect_uri,
        "scope": " ".join(config.scopes),
        "state": pending.state,
        "code_challenge": create_s256_code_challenge(pending.code_verifier),
        "code_challenge_method": "S256",
        **config.auth_params,
    }
    separator = "&" if urlsplit(config.auth_url).query else "?"
    return f"{config.auth_url}{separator}{urlencode(params)}"


def code_from(pasted: str, state: str | None) -> str:
    """The code out of what the user pasted: the code itself, or the whole address the
    browser was sent to (then its ``state`` must be ours, unless ``state`` is None).
    ValueError otherwise."""
    pasted = pasted.strip()
    if "://" not in pasted and "?" not in pasted:
        if not pasted:
            raise ValueError("no authorization code given")
        return pasted
    query = parse_qs(urlsplit(pasted).query)
    if "error" in query:
        raise ValueError(f"the provider refused the authorization: {query['error'][0]}")
    if state is not None and query.get("state", [state])[0] != state:
        raise ValueError("the address is from another authorization (its state differs)")
    codes = query.get("code")
    if not codes:
        raise ValueError("the address holds no 'code' parameter")
    return codes[0]


async def exchange_code(
    config: OAuthConfig,
    code: str,
    pending: PendingAuthorization,
    http: httpx.AsyncClient,
    now: float,
) -> TokenState:
    """The tokens for ``code``, given with the verifier of the authorization it answers."""
    params = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": config.redirect_uri,
        "code_verifier": pending.code_verifier,
    }
    try:
        answer = await _token_request(config, params, http)
    except OAuthRevoked:
        raise OAuthUnavailable(
            "the provider refused the authorization code (used, expired, or for another"
            " redirect_uri or authorization): authorize again"
        ) from None
    refresh = answer.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise OAuthUnavailable(
            "the token endpoint gave no refresh token: the provider may need consent again"
            " (revoke the app's access in the account, then authorize again)"
        )
    return TokenState(
        refresh_token=refresh,
        access_token=str(answer["access_token"]),
        expires_at=_expiry(answer, now),
        scope=answer.get("scope") if isinstance(answer.get("scope"), str) else None,
        authorized_at=now,
    )


def describe(state: TokenState | None, mailer: str, now: float) -> str:
    """One line for ``postroom mailer status``."""
    if state is None:
        return not_authorized_message(mailer)
    if state.failed is not None:
        return state.failed
    if state.access_token is None or state.expires_at is None:
        return "authorized; an access token will be fetched before the next send"
    left = state.expires_at - now
    if left <= 0:
        return "authorized; the access token has expired and is renewed before the next send"
    return f"authorized; the access token is valid for {int(left // 60)} more minutes"


class AccessTokens:
    """One mailer's access tokens: cached, renewed ``margin`` seconds before expiry."""

    def __init__(
        self,
        config: OAuthConfig,
        file: TokenFile,
        *,
        clock: Clock,
        http: httpx.AsyncClient,
        margin: float = REFRESH_MARGIN,
    ) -> None:
        self.config = config
        self._file = file
        self._clock = clock
        self._http = http
        self._margin = margin
        self._state: TokenState | None = None
        self._lock = asyncio.Lock()

    async def token(self, *, renew: bool = False) -> str:
        """A usable access token; ``renew`` after the API refused the current one.
        OAuthRevoked when a new authorization is needed, OAuthUnavailable otherwise."""
        async with self._lock:
            state = self._state
            if state is None or state.failed is not None:
                state = self._file.load()  # authorized again meanwhile?
            if state is None:
                raise OAuthRevoked(not_authorized_message(self.config.mailer))
            if state.failed is not None:
                self._state = state
                raise OAuthRevoked(state.failed)
            if renew or not self._fresh(state):
                # Authorized again meanwhile, or another process (``mailer test``) renewed
                # and got a rotated refresh token: the file's is the one to use.
                latest = self._file.load()
                if latest is not None and latest.failed is None and latest != state:
                    state = latest
                if renew or not self._fresh(state):
                    state = await self._refresh(state)
            self._state = state
            assert state.access_token is not None
            return state.access_token

    def _fresh(self, state: TokenState) -> bool:
        return (
            state.access_token is not None
            and state.expires_at is not None
            and self._clock.time() < state.expires_at - self._margin
        )

    async def _refresh(self, state: TokenState) -> TokenState:
        now = self._clock.time()
        params = {"grant_type": "refresh_token", "refresh_token": state.refresh_token}
        try:
            answer = await _token_request(self.config, params, self._http)
        except OAuthRevoked as exc:
            failed = replace(state, access_token=None, failed=str(exc), failed_at=now)
            self._file.save(failed)
            self._state = failed
            _log.error("mailer %s: %s", self.config.mailer, exc)
            raise
        refresh = answer.get("refresh_token")
        renewed = state.with_access(
            str(answer["access_token"]),
            _expiry(answer, now),
            refresh if isinstance(refresh, str) else None,
        )
        self._file.save(renewed)
        return renewed


def _expiry(answer: Mapping[str, Any], now: float) -> float | None:
    try:
        return now + float(answer["expires_in"])
    except (KeyError, TypeError, ValueError):
        return None


async def _token_request(
    config: OAuthConfig, params: dict[str, str], http: httpx.AsyncClient
) -> dict[str, Any]:
    """POST to the token endpoint; the JSON answer with an access token, or OAuthError."""
    params = {**params, "client_id": config.client_id, "client_secret": config.client_secret}
    where = urlsplit(config.token_url).netloc
    try:
        if config.token_params_in_query:
            response = await http.post(config.token_url, params=params, timeout=config.timeout)
        else:
            response = await http.post(config.token_url, data=params, timeout=config.timeout)
    except httpx.HTTPError as exc:
        raise OAuthUnavailable(f"token endpoint {where}: {type(exc).__name__}") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise OAuthUnavailable(f"token endpoint {where}: HTTP {response.status_code}, not JSON")
    error = answer.get("error")
    if isinstance(error, str):
        raise _token_error(config, where, response.status_code, error, answer)
    if response.status_code != 200 or not isinstance(answer.get("access_token"), str):
        raise OAuthUnavailable(f"token endpoint {where}: HTTP {response.status_code}")
    return answer


def _token_error(
    config: OAuthConfig, where: str, status: int, error: str, answer: Mapping[str, Any]
) -> OAuthError:
    if error in config.revoked_errors:
        return OAuthRevoked(revoked_message(config.mailer))
    description = " ".join(str(answer.get("error_description") or "").split())
    detail = f"{error}: {description[:_DETAIL_LIMIT]}" if description else error
    if error in ("invalid_client", "unauthorized_client"):
        _log.error(
            "mailer %s: token endpoint %s refused client_id %s (%s):"
            " check client_id and client_secret",
            config.mailer,
            where,
            config.client_id,
            detail,
        )
    return OAuthUnavailable(f"token endpoint {where}: HTTP {status} {detail}")
