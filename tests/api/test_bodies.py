"""Request bodies over real sockets: raw messages stream to the spool (line ends made
CRLF across chunk edges), 413 comes as soon as a limit is passed without the rest being
read, and bodies held whole share a budget (503 + Retry-After, unread, when it is full).
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator

import httpx

from tests.api.conftest import Api
from tests.support.servers import wait_for

RAW = "/api/v1/messages?rcpt=bob@example.net"


def stored(api: Api, queue_id: str) -> bytes:
    data = api.server.call(api.server.store.read_body(queue_id))
    assert data is not None
    return data


def test_a_large_raw_message_in_odd_chunks_is_stored_with_crlf_line_ends(api: Api) -> None:
    line = b"0123456789" * 7 + b"\n"  # bare LF, as many programs write
    body = line * 40_000  # 2.8 MB: well past the spool's memory part
    message = b"From: shop@example.com\nBcc: hidden@example.org\nSubject: big\n\n" + body

    def chunks() -> Iterator[bytes]:
        # Every edge falls between a CR and its LF: in the header block, then each 60 kB.
        data = message.replace(b"\n", b"\r\n")
        start, end = 0, data.index(b"\r") + 1
        while end > 0:
            yield data[start:end]
            start, end = end, data.find(b"\r", end + 60_000) + 1
        yield data[start:]

    with api.client() as client:
        answer = client.post(RAW, content=chunks(), headers={"Content-Type": "message/rfc822"})
        assert answer.status_code == 202, answer.text
        chunked = stored(api, answer.json()["id"])
        answer = client.post(RAW, content=message, headers={"Content-Type": "message/rfc822"})
        assert answer.status_code == 202, answer.text
        bare = stored(api, answer.json()["id"])
    for data in (chunked, bare):
        assert data.endswith(body.replace(b"\n", b"\r\n"))
        head = data[: data.index(b"\r\n\r\n")]
        assert b"Bcc" not in head and b"hidden@" not in head
        assert b"\nSubject: big" in head and b"Message-ID: <" in head
        assert b"\n" not in data.replace(b"\r\n", b"")


def request_head(api: Api, path: str, content_type: str, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {api.key}\r\n"
        f"Content-Type: {content_type}\r\n{extra}\r\n"
    ).encode()


def connect(api: Api) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.server.api_port), timeout=10)


def final_answer(sock: socket.socket) -> tuple[int, bytes]:
    """The next final response on ``sock`` (http.client parses it; it skips a 100)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def test_413_before_the_body_is_read_when_the_length_is_declared(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(limits={"max_message_size": 64 * 1024})
    with connect(api) as sock:
        sock.sendall(
            request_head(
                api, RAW, "message/rfc822", "Content-Length: 70000\r\nExpect: 100-continue\r\n"
            )
        )
        first = sock.recv(12, socket.MSG_PEEK)
        status, body = final_answer(sock)
    # The answer comes at once: no "100 Continue", so the client never sends the body.
    assert first == b"HTTP/1.1 413"
    assert (status, json.loads(body)["error"]["code"]) == (413, "payload_too_large")


def test_413_as_soon_as_a_chunked_body_passes_the_limit(make_api: Callable[..., Api]) -> None:
    api = make_api(limits={"max_message_size": 64 * 1024})
    with connect(api) as sock:
        sock.sendall(request_head(api, RAW, "message/rfc822", "Transfer-Encoding: chunked\r\n"))
        chunk = b"x" * 16 * 1024
        for _ in range(5):  # 80 KiB: just past the limit, and the end never sent
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        status, _ = final_answer(sock)
    assert status == 413
    assert api.server.call(api.server.store.count_messages()) == 0


def json_waiting_for_its_body(api: Api, framing: str) -> socket.socket:
    """A JSON send whose body is not sent yet, its share of the budget taken: the
    server answers "100 Continue" once it has taken it."""
    sock = connect(api)
    head = request_head(
        api, "/api/v1/messages", "application/json", f"{framing}Expect: 100-continue\r\n"
    )
    sock.sendall(head)
    assert sock.recv(1024).startswith(b"HTTP/1.1 100")
    return sock


def test_bodies_held_whole_share_a_budget_and_the_rest_get_503_unread(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(api={"port": 0, "max_inflight_bytes": 1024 * 1024})
    with json_waiting_for_its_body(api, "Content-Length: 900000\r\n") as first:
        with api.client() as client:
            over = client.post(
                "/api/v1/messages",
                content=b" " * 200_000,
                headers={"Content-Type": "application/json"},
            )
            assert over.status_code == 503
            assert over.headers["retry-after"] == "5"
            assert over.json()["error"]["code"] == "unavailable"
            # A raw message is not held whole: it does not wait for the budget.
            raw = client.post(
                RAW,
                content=b"From: a@example.com\r\n\r\nhi\r\n",
                headers={"Content-Type": "message/rfc822"},
            )
            assert raw.status_code == 202, raw.text
        first.sendall(b" " * 900_000)
        assert final_answer(first)[0] == 422  # blank is not a JSON document
    with api.client() as client:  # the share was given back
        answer = client.post(
            "/api/v1/messages",
            content=b" " * 200_000 + b"{}",
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 422, answer.text


def test_a_chunked_json_body_counts_against_the_budget_as_it_arrives(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(api={"port": 0, "max_inflight_bytes": 1024 * 1024})
    with json_waiting_for_its_body(api, "Transfer-Encoding: chunked\r\n") as first:
        chunk = b" " * 64 * 1024
        for _ in range(15):  # 960 KiB in, the end not sent
            first.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        with httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {api.key}"}
        ) as client:

            def over() -> bool:
                answer = client.post(
                    "/api/v1/messages",
                    content=b" " * 200_000,
                    headers={"Content-Type": "application/json"},
                )
                return answer.status_code == 503

            # The chunks reach the server as they come: poll, no clock to inject here.
            wait_for(over)
