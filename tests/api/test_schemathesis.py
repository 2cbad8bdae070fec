"""Schemathesis against the running API, every check, positive and negative data: no
schema-valid request is refused, no invalid one accepted, no answer is a server error or
strays from the document, and created messages can be read back and deleted.

The `st` command runs as a process against a real server, as a user would run it; the
seed is fixed, so a failure is reproducible, and the example count keeps the run short (a
deep run, tests/support/depth.py, sends ten times as many). The rate limit is off: the
fuzzer sends thousands of requests. The paths it cannot make data for are given real
values: the /t/ tokens of a tracked message, and a mailer that takes provider webhooks.
"""

from __future__ import annotations

import email
import email.policy
import re
import subprocess
import sys
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import httpx

from tests.api.conftest import Api
from tests.api.test_hooks import MAILGUN
from tests.support.depth import examples

EXAMPLES = examples(25)  # per operation and phase; ten times as many in a deep run
SEED = 20261204
HOOK_WARNINGS = '["missing_test_data", "validation_mismatch", "unsupported_regex"]'


def test_schemathesis_finds_nothing_with_every_check(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    api = make_api(api={"port": 0, "rate_limit": 0}, mailers=[MAILGUN])
    (tmp_path / "schemathesis.toml").write_text(_real_values(api))
    st = Path(sys.executable).with_name("st")
    run = subprocess.run(
        [
            str(st), "run", f"{api.url}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {api.key}",
            "--checks", "all",
            "--mode", "all",
            "--phases", "examples,coverage,fuzzing,stateful",
            "--max-examples", str(EXAMPLES),
            "--seed", str(SEED),
            "--workers", "1",
            "--no-color",
            "--request-timeout", "30",
        ],
        cwd=tmp_path,  # no schemathesis.toml from elsewhere; its database stays here
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    assert "No issues found" in run.stdout, run.stdout[-8000:]
    # Every operation of the document was exercised (the document itself is the source).
    assert "22 selected / 22 total" in run.stdout


def _real_values(api: Api) -> str:
    """schemathesis.toml: the tokens of a message sent with tracking and one-click
    unsubscribe, and the mailer whose webhook /hooks takes."""
    sent = httpx.post(
        f"{api.url}/api/v1/messages",
        headers={"Authorization": f"Bearer {api.key}"},
        json={
            "from": "app@example.test",
            "to": "reader@remote.test",
            "subject": "s",
            "html": '<html><body><a href="https://shop.example/">x</a></body></html>',
            "track": True,
            "unsubscribe": True,
        },
        timeout=10,
    )
    assert sent.status_code == 202, sent.text
    data = api.server.call(api.server.store.read_body(sent.json()["id"])) or b""
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    html = message.get_body(("html",))
    assert html is not None
    # The pixel and the link in the (encoded) HTML part, the unsubscribe URL in the header.
    text = f"{html.get_content()} {message['List-Unsubscribe']}"
    tokens = dict(re.findall(r"/t/([ocu])/([A-Za-z0-9_.-]+)", text))
    assert set(tokens) == {"o", "c", "u"}, text
    operations = [(f"/t/{kind}/{{token}}", "token", tokens[kind], "true") for kind in "ocu"]
    # A provider signs its callbacks: every request a fuzzer makes is refused with 401,
    # which is the point; the other warnings stay on.
    operations.append(("/hooks/{mailer}", "mailer", str(MAILGUN["name"]), HOOK_WARNINGS))
    return "".join(
        f'[[operations]]\ninclude-path = "{path}"\nwarnings = {warnings}\n'
        f'parameters = {{ "path.{name}" = "{value}" }}\n'
        for path, name, value, warnings in operations
    )
