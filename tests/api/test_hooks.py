"""POST /hooks/{mailer}: a provider's signed callback over real HTTP, recorded on the
attempt that carried the provider's message id; forged and malformed ones refused."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

import httpx

from tests.api.conftest import Api
from tests.delivery.webhooks.conftest import mailgun_event
from tests.store.factories import NOW, attempt, delivered, new_message, to

SIGNING_KEY = "hook-signing-key"
PROVIDER_ID = "<20270101.1@mg.example.org>"
MAILGUN = {
    "name": "mg",
    "type": "mailgun",
    "domain": "mg.example.org",
    "api_key": "key-not-used-here",
    "webhook": {"signing_key": SIGNING_KEY},
}


def sent_through_mailgun(api: Api) -> str:
    message = new_message(recipients=to("bob@example.net"))
    store = api.server.store
    api.server.call(store.enqueue(message))
    sent = dataclasses.replace(
        attempt(message.id, "bob@example.net", NOW, mailer="mg"), provider_id=PROVIDER_ID
    )
    api.server.call(store.record_outcomes(message.id, [delivered("bob@example.net")], [sent]))
    return message.id


def test_a_signed_event_is_recorded_on_its_attempt(make_api: Callable[..., Api]) -> None:
    api = make_api(mailers=[MAILGUN])
    message_id = sent_through_mailgun(api)
    body = mailgun_event(SIGNING_KEY.encode(), str(int(api.clock.time())))
    with httpx.Client(base_url=api.url, timeout=10) as http:  # no API key: the signature is
        answer = http.post("/hooks/mg", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"received": 1, "matched": 1}
    (event,) = api.server.call(api.server.store.provider_events(message_id))
    assert (event.mailer, event.status, event.detail) == ("mg", "bounced", "No such mailbox")


def test_forged_unknown_and_malformed_callbacks_are_refused(make_api: Callable[..., Api]) -> None:
    api = make_api(mailers=[MAILGUN])
    message_id = sent_through_mailgun(api)
    now = str(int(api.clock.time()))
    with httpx.Client(base_url=api.url, timeout=10) as http:
        forged = http.post("/hooks/mg", content=mailgun_event(b"guessed-key", now))
        unknown = http.post("/hooks/nobody", content=mailgun_event(SIGNING_KEY.encode(), now))
        signed = json.loads(mailgun_event(SIGNING_KEY.encode(), now))
        signed["event-data"] = "not an event"  # signed (Mailgun signs the token only), unreadable
        malformed = http.post("/hooks/mg", content=json.dumps(signed).encode())
        unsigned = http.post("/hooks/mg", content=b"{not json")
        no_hook = http.post("/hooks/local", content=b"{}")
    assert forged.status_code == 401 and unsigned.status_code == 401
    assert forged.json()["error"]["code"] == "unauthorized"
    assert unknown.status_code == 404 and no_hook.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert malformed.status_code == 422
    assert malformed.json()["error"]["fields"][0]["field"] == "body"
    assert api.server.call(api.server.store.provider_events(message_id)) == []
