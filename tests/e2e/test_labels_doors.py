"""Tags and metadata (``X-Postroom-Tag``, ``X-Postroom-Metadata``) and the Subject through
every door: SMTP submission (smtplib), the mx listener, ``postroom-sendmail`` and
``postroom send`` as processes, the HTTP API raw and JSON. One rule in intake: the fields
are read from submitted mail, removed from every message, checked with the API's limits,
stored with the message and carried by its events; a stranger's are dropped unread."""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import sys

import httpx
import pytest

from postroom.directory.apikeys import ApiKeys
from postroom.store.models import LogQuery, MessageMeta
from tests.conftest import FakeClock
from tests.e2e.test_cleanup_doors import relay, sendmail, sink, stored_by_id, submit
from tests.support.servers import smtp_client
from tests.support.smtp_peers import SmtpPeer
from tests.support.thread import ServerThread

__all__ = ["relay", "sink"]  # the fixtures, used by name

LABELLED = (
    b"From: app@example.test\r\nTo: friend@remote.test\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= order\r\n"
    b"X-Postroom-Tag: welcome, onboarding\r\n"
    b"X-Postroom-Tag: welcome\r\n"
    b'X-Postroom-Metadata: {"order": "42",\r\n "user": "7"}\r\n'
    b"\r\nbody\r\n"
)


def meta_of(srv: ServerThread, queue_id: str) -> MessageMeta:
    return srv.call(srv.store.message_meta([queue_id]))[queue_id]


def only(srv: ServerThread) -> tuple[str, bytes]:
    ((queue_id, body),) = stored_by_id(srv).items()
    return queue_id, body


def test_smtp_submission_labels_are_stored_removed_and_carried_by_events(
    relay: ServerThread, sink: SmtpPeer
) -> None:
    submit(relay, LABELLED)
    queue_id, body = only(relay)
    assert b"x-postroom" not in body.lower()
    meta = meta_of(relay, queue_id)
    assert meta.tags == ("welcome", "onboarding")
    assert meta.metadata == (("order", "42"), ("user", "7"))
    assert meta.subject == "Café order"
    # The log's filters (the dashboard's) find SMTP mail by its subject and its tags.
    for query in (LogQuery(subject="café"), LogQuery(tag="onboarding")):
        assert [m.id for m in relay.call(relay.store.query(query))] == [queue_id]
    assert relay.call(relay.store.query(LogQuery(tag="other"))) == []
    assert relay.run_delivery() == 1
    assert b"x-postroom" not in sink.received[0].data.lower()  # never sent on
    events = relay.call(relay.store.events(queue_id))
    assert [e.type.value for e in events] == ["queued", "sent"]
    for event in events:
        assert event.tags == ("welcome", "onboarding")
        assert dict(event.metadata) == {"order": "42", "user": "7"}


@pytest.mark.parametrize(
    ("field", "problem"),
    [
        (b"X-Postroom-Metadata: [1, 2]", "not a JSON object"),
        (b'X-Postroom-Metadata: {"n": 1}', "is not a string"),
        (b"X-Postroom-Tag: " + b",".join(b"t%d" % i for i in range(21)), "at most 20 tags"),
        (b"X-Postroom-Tag: " + b"x" * 65, "longer than 64 characters"),
        (b"X-Postroom-Tag: a,,b", "a tag is empty"),
    ],
)
def test_unusable_label_fields_over_smtp_are_refused_with_550_5_6_0(
    relay: ServerThread, field: bytes, problem: str
) -> None:
    message = b"From: app@example.test\r\nSubject: s\r\n" + field + b"\r\n\r\nbody\r\n"
    with pytest.raises(smtplib.SMTPDataError) as refused:
        submit(relay, message)
    code, error = refused.value.smtp_code, refused.value.smtp_error
    text = error.decode() if isinstance(error, bytes) else error
    assert code == 550 and text.startswith("5.6.0 X-Postroom-"), text
    assert problem in text
    assert stored_by_id(relay) == {}


def test_a_strangers_label_fields_at_the_mx_listener_are_removed_and_ignored(
    relay: ServerThread,
) -> None:
    with smtp_client(relay.ports["mx"]) as client:
        client.sendmail("someone@outside.test", ["app@example.test"], LABELLED)
    queue_id, body = only(relay)
    assert b"x-postroom" not in body.lower()
    meta = meta_of(relay, queue_id)
    assert (meta.tags, meta.metadata) == ((), ())
    assert meta.subject == "Café order"  # the log knows every message's subject
    assert meta.message_id is None  # mail from outside is not completed


def test_sendmail_labels_are_read_like_smtp_ones(relay: ServerThread) -> None:
    done = sendmail(relay, LABELLED.replace(b"\r\n", b"\n"), "friend@remote.test")
    assert done.returncode == 0, done.stderr
    queue_id, body = only(relay)
    assert b"x-postroom" not in body.lower()
    meta = meta_of(relay, queue_id)
    assert meta.tags == ("welcome", "onboarding") and dict(meta.metadata)["order"] == "42"
    assert meta.message_id is not None and meta.message_id.startswith(f"<{queue_id}.")


def test_sendmail_with_an_unusable_label_exits_65_naming_the_field(relay: ServerThread) -> None:
    done = sendmail(relay, b"Subject: s\nX-Postroom-Metadata: nope\n\nb\n", "friend@remote.test")
    assert done.returncode == 65, done.stderr
    assert "X-Postroom-Metadata" in done.stderr.decode()
    assert stored_by_id(relay) == {}


def test_postroom_send_tag_and_metadata_options(relay: ServerThread) -> None:
    config = relay.data_dir.parent / "send.toml"
    config.write_text(f'hostname = "mail.test"\ndata_dir = "{relay.data_dir}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "postroom", "--config", str(config), "send",
         "--to", "friend@remote.test", "--subject", "Hello",
         "--tag", "cli", "--metadata", "run=1", "--metadata", "note=a=b"],
        capture_output=True, text=True, env=dict(os.environ), timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    queue_id, body = only(relay)
    assert b"x-postroom" not in body.lower()
    meta = meta_of(relay, queue_id)
    assert (meta.subject, meta.tags, meta.metadata) == (
        "Hello",
        ("cli",),
        (("run", "1"), ("note", "a=b")),
    )


def _api(srv: ServerThread) -> tuple[str, dict[str, str]]:
    token = srv.call(ApiKeys(srv.store, FakeClock()).create("app", ())).token
    url = f"http://127.0.0.1:{srv.api_port}/api/v1/messages"
    return url, {"Authorization": f"Bearer {token}"}


def test_api_raw_and_json_messages_get_the_same_rule(relay: ServerThread) -> None:
    url, auth = _api(relay)
    raw = httpx.post(
        url,
        content=LABELLED,
        headers={**auth, "Content-Type": "message/rfc822"},
        params={"rcpt": "friend@remote.test"},
        timeout=10,
    )
    assert raw.status_code == 202, raw.text
    fields = httpx.post(
        url,
        json={
            "from": "app@example.test",
            "to": "friend@remote.test",
            "subject": "s",
            "text": "b",
            "tags": ["json"],
            "metadata": {"order": "1"},
            "headers": {"X-Postroom-Tag": "header", "X-Postroom-Metadata": '{"order": "2"}'},
        },
        headers=auth,
        timeout=10,
    )
    assert fields.status_code == 202, fields.text
    raw_meta = meta_of(relay, raw.json()["id"])
    assert raw_meta.tags == ("welcome", "onboarding") and raw_meta.subject == "Café order"
    json_meta = meta_of(relay, fields.json()["id"])
    assert json_meta.tags == ("json", "header")
    assert json_meta.metadata == (("order", "2"),)  # the header's word is the later one
    shown = httpx.get(f"{url}/{fields.json()['id']}", headers=auth, timeout=10).json()
    assert (shown["tags"], shown["metadata"]) == (["json", "header"], {"order": "2"})
    for body in stored_by_id(relay).values():
        assert b"x-postroom" not in body.lower()


def test_an_unusable_label_field_through_the_api_is_422_naming_it(relay: ServerThread) -> None:
    url, auth = _api(relay)
    answer = httpx.post(
        url,
        content=b"From: app@example.test\r\nX-Postroom-Metadata: {\r\n\r\nb\r\n",
        headers={**auth, "Content-Type": "message/rfc822"},
        params={"rcpt": "friend@remote.test"},
        timeout=10,
    )
    assert answer.status_code == 422, answer.text
    (problem,) = answer.json()["error"]["fields"]
    assert problem["field"] == "X-Postroom-Metadata"
    assert json.dumps(problem)  # a plain JSON answer, no traceback
    assert stored_by_id(relay) == {}
