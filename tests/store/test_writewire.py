"""The shared writer's wire, sans I/O: frames cut from any split of the stream, requests
and replies read back as written, and anything else refused."""

from __future__ import annotations

import struct

import pytest

from postroom.errors import StoreDamaged, StoreFull, StoreUnavailable
from postroom.store.sqlite.delivery import OutcomeRows
from postroom.store.sqlite.queue import EnqueueRows
from postroom.store.sqlite.writewire import (
    MAX_FRAME,
    Frames,
    WireError,
    read_reply,
    read_request,
    reply,
    request,
)

ROWS = EnqueueRows(
    ("06H000000000ABCD", "alice@example.org", None, None, "7BIT", False, 12, 1.5, "smtp"),
    [("06H000000000ABCD", 0, "bob@example.net", None, None, "queued", 1.5, None, None)],
    [("ev1", "queued", 1.5, "06H000000000ABCD", None, None, None, None, "smtp", "{}")],
    None,
    b"Subject: hi\r\n\r\nhello\r\n",
)
OUTCOMES = OutcomeRows(
    "06H000000000ABCD",
    [("delivered", None, "250 2.0.0 Delivered", 0, 1, "06H000000000ABCD", "bob@example.net")],
    [("06H000000000ABCD", "bob@example.net", 2.5, "local", "delivered", 250, "2.0.0", "ok")],
    [
        (
            "ev2",
            "delivered",
            2.5,
            "06H000000000ABCD",
            "bob@example.net",
            "local",
            "250",
            None,
            "delivery",
            "{}",
        )
    ],
)


def test_a_request_reads_back_as_written_from_any_split_of_the_stream() -> None:
    other = ROWS._replace(meta=("m1", "<x@y>", "hi", "[]", "{}"), data=b"\x00\xff" * 100)
    stream = request(7, [ROWS, other]) + request(8, [ROWS, OUTCOMES])
    for step in (1, 3, 17, len(stream)):
        frames = Frames()
        values: list[object] = []
        for start in range(0, len(stream), step):
            values += frames.feed(stream[start : start + step])
        assert [read_request(v) for v in values] == [(7, [ROWS, other]), (8, [ROWS, OUTCOMES])]
    (value,) = Frames().feed(request(9, [OUTCOMES]))
    assert type(read_request(value)[1][0]) is OutcomeRows  # not read back as a message


def test_a_reply_keeps_each_messages_outcome_and_error_kind() -> None:
    outcomes = [None, StoreFull("disk full"), StoreDamaged("bad page"), StoreUnavailable("gone")]
    (value,) = Frames().feed(reply(3, outcomes))
    batch, read = read_reply(value)
    assert batch == 3
    assert [type(o) for o in read] == [type(None), StoreFull, StoreDamaged, StoreUnavailable]
    assert [str(o) for o in read[1:]] == ["disk full", "bad page", "gone"]


def test_rows_with_a_value_that_is_not_plain_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        request(1, [ROWS._replace(message=(object(),))])


def test_a_frame_longer_than_allowed_is_refused_before_it_is_read() -> None:
    with pytest.raises(WireError, match="a frame of"):
        Frames().feed(struct.pack("!I", MAX_FRAME + 1))


@pytest.mark.parametrize(
    "payload",
    [b"\x00garbage", b""],
    ids=["unreadable", "empty"],
)
def test_an_unreadable_frame_is_refused(payload: bytes) -> None:
    with pytest.raises(WireError, match="unreadable"):
        Frames().feed(struct.pack("!I", len(payload)) + payload)


@pytest.mark.parametrize(
    "value",
    [
        None,
        (1,),
        ("1", []),
        (1, [("message", ("too", "short"))]),
        (1, [("message", (1, 2, 3, 4, "not bytes"))]),
        (1, [("outcomes", (5, [], [], []))]),
        (1, [("nonsense", tuple(ROWS))]),
        (1, [tuple(ROWS)]),
    ],
)
def test_a_value_that_is_not_a_request_is_refused(value: object) -> None:
    with pytest.raises(WireError, match="not a request"):
        read_request(value)


@pytest.mark.parametrize("value", [None, (1, [("nonsense", "x")]), ("1", [None]), (1, [()])])
def test_a_value_that_is_not_a_reply_is_refused(value: object) -> None:
    with pytest.raises(WireError, match="not a reply"):
        read_reply(value)
