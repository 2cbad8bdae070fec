"""``[[webhooks]]``: where postroom POSTs its events (``docs/events.md``).

Each entry names a receiver: its URL, which event types and tags it wants, the secret
its requests are signed with, and how long a failing event is retried.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from postroom.mail.events import EventType

__all__ = ["WebhookTarget"]


class WebhookTarget(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    url: AnyHttpUrl
    # Event types sent; empty: every type.
    events: tuple[EventType, ...] = ()
    # Only events of messages with at least one of these tags; empty: any message.
    tags: tuple[str, ...] = ()
    # The HMAC-SHA256 key of the X-Postroom-Signature header (or the variable holding it).
    secret: SecretStr | None = None
    secret_env: str | None = None
    # Seconds to wait for the receiver's answer; no answer in time counts as a failure.
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    # Seconds an event is retried (with backoff) before it is given up as failed.
    retry_for: Annotated[float, Field(gt=0)] = 86400.0

    @field_validator("tags", mode="after")
    @classmethod
    def _tags(cls, tags: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(tags))

    @model_validator(mode="after")
    def _signed(self) -> WebhookTarget:
        if self.secret is None and self.secret_env is None:
            raise ValueError("set secret or secret_env: every request is signed with it")
        return self

    def as_json(self, pending: int) -> dict[str, object]:
        """As ``postroom webhook list --json`` and the API show it (no secret)."""
        return {
            "name": self.name,
            "url": str(self.url),
            "events": [e.value for e in self.events],
            "tags": list(self.tags),
            "pending": pending,
        }

    def wants(self, kind: EventType, tags: tuple[str, ...]) -> bool:
        """Whether an event of ``kind`` about a message tagged ``tags`` goes here."""
        if self.events and kind not in self.events:
            return False
        return not self.tags or any(tag in self.tags for tag in tags)
