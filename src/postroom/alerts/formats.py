"""An alert as each destination wants it (sans-IO): the JSON body of Slack, Microsoft
Teams and Discord incoming webhooks and of a generic webhook, or an email message."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from postroom.alerts.watch import Alert
from postroom.config.feedback import AlertFormat

__all__ = ["alert_email", "alert_json"]


def _text(alert: Alert) -> str:
    more = f"\n({alert.held_back} more like this were held back)" if alert.held_back else ""
    return alert.text + more


def alert_json(alert: Alert, form: AlertFormat, hostname: str) -> dict[str, Any]:
    """The POST body for ``form`` (any format but email)."""
    title = f"postroom on {hostname}: {alert.title}"
    match form:
        case AlertFormat.SLACK:  # incoming webhooks: text is the notification's
            return {
                "text": title,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title}*"}},
                    {"type": "section", "text": {"type": "plain_text", "text": _text(alert)}},
                ],
            }
        case AlertFormat.TEAMS:  # the MessageCard a Teams incoming webhook takes
            return {
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": title,
                "themeColor": "D70000",
                "title": title,
                "text": _text(alert).replace("\n", "<br>"),
            }
        case AlertFormat.DISCORD:  # content is at most 2000 characters
            return {"content": f"**{title}**\n{_text(alert)}"[:2000]}
        case _:
            return {
                "kind": alert.kind.value,
                "subject": alert.subject,
                "title": alert.title,
                "text": alert.text,
                "held_back": alert.held_back,
                "host": hostname,
                "timestamp": datetime.fromtimestamp(alert.at, UTC).isoformat(),
            }


def alert_email(alert: Alert, *, sender: str, to: tuple[str, ...], hostname: str) -> bytes:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = f"[postroom {hostname}] {alert.title}"
    message["Date"] = format_datetime(datetime.fromtimestamp(alert.at, UTC))
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834 5: nothing should answer it
    message.set_content(_text(alert) + "\n")
    return message.as_bytes()
