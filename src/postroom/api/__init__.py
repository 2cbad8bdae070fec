"""The HTTP API (Starlette on uvicorn, inside `postroom serve`): send mail, read the email
log, act on the queue. Bearer API keys with per-key sender domains and rate limits.

Input: HTTP requests. Output: messages handed to ``intake`` (never straight to the
store), and JSON answers whose shapes ``schemas`` defines and ``openapi`` publishes.
Invariant: a 202 is sent only after the message is durable; every error is JSON.
"""

from postroom.api.app import create_app
from postroom.api.deps import ApiDeps
from postroom.api.server import ApiServer

__all__ = ["ApiDeps", "ApiServer", "create_app"]
