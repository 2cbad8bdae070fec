"""``[mailers.webhook]``: how a provider's event callbacks prove where they come from.

Which keys a provider needs depends on what it offers: SendGrid signs with ECDSA
(``public_key``), Mailgun and Resend with an HMAC key (``signing_key``), Amazon SES
through SNS with a certificate (``sns_topics`` narrows the topics), and the rest only
send the Basic credentials configured on the hook (``username`` and ``password``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr

__all__ = ["WebhookSettings"]


class WebhookSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Basic credentials the provider sends (Postmark, Brevo, Mailjet, SparkPost, ...).
    username: str | None = None
    password: SecretStr | None = None
    password_env: str | None = None
    # Mailgun's webhook signing key, or Resend's "whsec_..." secret.
    signing_key: SecretStr | None = None
    signing_key_env: str | None = None
    # SendGrid's verification key: base64 DER as its console shows it, or PEM.
    public_key: str | None = None
    # Seconds a signed timestamp may differ from our clock (replays are refused).
    tolerance: Annotated[float, Field(gt=0)] = 300.0
    # Amazon SNS topic ARNs accepted; empty: any topic whose message verifies.
    sns_topics: tuple[str, ...] = ()
