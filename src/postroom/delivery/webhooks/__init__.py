"""Provider callbacks (webhooks): check who sent them, map them, record them.

Each provider module checks its own way of signing (``verify``) and maps its payload
to ``ProviderEvent``s (``parse``); ``handle.handle_webhook`` puts both together for
the ``POST /hooks/{mailer}`` route and records the events on the attempts whose
provider message id they name. Nothing here trusts a payload before it verified.
"""

from postroom.delivery.webhooks.events import EventStatus, PayloadError, ProviderEvent
from postroom.delivery.webhooks.handle import handle_webhook

__all__ = ["EventStatus", "PayloadError", "ProviderEvent", "handle_webhook"]
