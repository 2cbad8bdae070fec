"""A fake OAuth 2.0 token endpoint (RFC 6749 4.1.3 and 6) on loopback.

It checks what a real one checks: POST, form encoding (or, ``in_query`` like Zoho's,
the parameters in the query string), the client's id and secret, the grant type, a
code issued for the same redirect URI, the PKCE code verifier of a code issued with a
challenge (RFC 7636 4.6, S256), a refresh token it issued and did not revoke.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
from dataclasses import dataclass, field

from tests.support.http_fake import Reply, Request

__all__ = ["TokenEndpoint", "s256"]


def s256(verifier: str) -> str:
    """RFC 7636 4.2: BASE64URL(SHA256(ASCII(code_verifier))), unpadded."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass
class TokenEndpoint:
    client_id: str = "client-123"
    client_secret: str = "secret-456"
    expires_in: int = 3600
    in_query: bool = False
    rotate: bool = False  # hand out a new refresh token on every refresh (Microsoft)
    revoked_error: tuple[int, str] = (400, "invalid_grant")  # Zoho: (200, "invalid_code")
    codes: dict[str, str] = field(default_factory=dict)  # code -> redirect_uri
    challenges: dict[str, str] = field(default_factory=dict)  # code -> its S256 challenge
    verifiers: list[str] = field(default_factory=list)  # code_verifier of each exchange
    refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: list[str] = field(default_factory=list)
    down: bool = False
    _serial: itertools.count[int] = field(default_factory=itertools.count)

    def revoke_all(self) -> None:
        self.refresh_tokens.clear()

    def __call__(self, request: Request) -> Reply:
        if self.down:
            return Reply(503, b"unavailable")
        if request.method != "POST":
            return Reply.json(405, {"error": "invalid_request"})
        if self.in_query:
            params = {k: v[0] for k, v in request.query.items()}
        else:
            if request.headers.get("content-type") != "application/x-www-form-urlencoded":
                return Reply.json(400, {"error": "invalid_request", "error_description": "form"})
            params = {k: v[0] for k, v in request.form().items()}
        if (params.get("client_id"), params.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return Reply.json(401, {"error": "invalid_client", "error_description": "Unauthorized"})
        match params.get("grant_type"):
            case "authorization_code":
                code, verifier = params.get("code", ""), params.get("code_verifier", "")
                redirect, challenge = self.codes.pop(code, None), self.challenges.pop(code, None)
                self.verifiers.append(verifier)
                if redirect is None or redirect != params.get("redirect_uri"):
                    return Reply.json(400, {"error": "invalid_grant"})
                if challenge is not None and s256(verifier) != challenge:
                    return Reply.json(400, {"error": "invalid_grant", "error_description": "PKCE"})
                refresh = f"refresh-{next(self._serial)}"
                self.refresh_tokens.add(refresh)
                return Reply.json(200, self._tokens(refresh))
            case "refresh_token":
                refresh = params.get("refresh_token", "")
                if refresh not in self.refresh_tokens:
                    status, error = self.revoked_error
                    return Reply.json(
                        status,
                        {"error": error, "error_description": "Token has been expired or revoked."},
                    )
                if self.rotate:
                    self.refresh_tokens.discard(refresh)
                    refresh = f"refresh-{next(self._serial)}"
                    self.refresh_tokens.add(refresh)
                    return Reply.json(200, self._tokens(refresh))
                return Reply.json(200, self._tokens(None))
            case _:
                return Reply.json(400, {"error": "unsupported_grant_type"})

    def _tokens(self, refresh: str | None) -> dict[str, object]:
        access = f"access-{next(self._serial)}"
        self.access_tokens.append(access)
        answer: dict[str, object] = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "scope": "mail.send",
        }
        if refresh is not None:
            answer["refresh_token"] = refresh
        return answer
