"""Alerts for operators: when mail bounces or expires, a mailer keeps failing, the
bounce rate climbs, or a domain's DNS check turns bad; sent to email, a generic webhook,
Slack, Microsoft Teams or Discord (``[[alerts]]``), rate-limited so that an outage gives
a few alerts, not one per message.

``watch`` (what raises an alert, and the limiter) and ``formats`` are sans-IO;
``service`` is the supervised task that feeds them and sends.
"""

from postroom.alerts.service import Alerts, SendEmail
from postroom.alerts.watch import Alert, Limiter, Watch

__all__ = ["Alert", "Alerts", "Limiter", "SendEmail", "Watch"]
