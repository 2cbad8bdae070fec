"""Typed events, published after what they report is durable, and their subscribers."""

from postroom.events.bus import Bus
from postroom.events.catalog import DeliveryAttempt, MessageQueued, SmtpTransaction

__all__ = ["Bus", "DeliveryAttempt", "MessageQueued", "SmtpTransaction"]
