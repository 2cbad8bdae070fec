"""The sans-IO IMAP core: framing, tokens, commands and the state machine, no sockets."""

from __future__ import annotations

import datetime as dt

import pytest

from postroom.imap import commands as c
from postroom.imap.connection import (
    Closed,
    Credentials,
    Event,
    IdleDone,
    ImapConfig,
    ImapConnection,
    Request,
    StartTls,
    State,
    Write,
)
from postroom.imap.tokens import Atom, Literal, ParenList, String, TokenError, tokenize

CONFIG = ImapConfig(
    "imap.test",
    max_line=200,
    max_literal=100,
    max_message_size=1000,
    max_command=400,
    starttls_available=True,
)


def run(
    data: bytes, *, tls: bool = True, state: State = State.NOT_AUTHENTICATED, whole: bool = True
) -> list[Event]:
    conn = ImapConnection(CONFIG, tls=tls)
    conn.state = state
    events: list[Event] = []
    chunks = [data] if whole else [data[i : i + 1] for i in range(len(data))]
    for chunk in [*chunks, b""]:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not None:
            events.append(event)
    return events


def both(data: bytes, **kwargs: object) -> list[Event]:
    """The events of ``data`` given whole and byte at a time, which must be the same."""
    whole = run(data, **kwargs)  # type: ignore[arg-type]
    assert run(data, whole=False, **kwargs) == whole  # type: ignore[arg-type]
    return whole


def only_request(data: bytes, state: State = State.SELECTED) -> c.Command:
    events = both(data, state=state)
    assert isinstance(events[0], Request), events
    return events[0].command


# -- tokens ---------------------------------------------------------------------------


def test_tokens_nest_lists_quoted_strings_literals_and_bracketed_atoms() -> None:
    tokens = tokenize(
        [
            b'a ("q \\"x\\"" (b NIL) BODY[HEADER.FIELDS (From To)]<0.10>) \\Seen ',
            Literal(b"L\r\n"),
            b"",
        ]
    )
    assert tokens == [
        Atom("a"),
        ParenList(
            (
                String(b'q "x"'),
                ParenList((Atom("b"), Atom("NIL"))),
                Atom("BODY[HEADER.FIELDS (From To)]<0.10>"),
            )
        ),
        Atom("\\Seen"),
        String(b"L\r\n", literal=True),
    ]


@pytest.mark.parametrize(
    "line",
    [
        b"a  b",
        b"a (b",
        b"a b)",
        b'a "b',
        b'a "\\n"',
        b"a (b )",
        b"a b ",
        b"a ((((((((((((((((((x))))))))))))))))))",
    ],
)
def test_broken_syntax_is_a_token_error(line: bytes) -> None:
    with pytest.raises(TokenError):
        tokenize([line])


# -- framing and its limits -------------------------------------------------------------


def test_a_synchronizing_literal_gets_a_continuation_and_login_is_framed_with_it() -> None:
    events = both(b"a1 LOGIN {3}\r\nbob {4}\r\np w!\r\n")
    assert events[0] == Write(b"+ Ready for literal data\r\n")
    assert events[1] == Write(b"+ Ready for literal data\r\n")
    assert events[2] == Request("a1", c.Login("bob", "p w!"))
    assert isinstance(events[3], Closed)


def test_a_non_synchronizing_literal_needs_no_continuation() -> None:
    events = both(b"a1 LOGIN {3+}\r\nbob pw\r\n")
    assert events[:1] == [Request("a1", c.Login("bob", "pw"))]


def test_a_literal_over_the_limit_is_refused_before_it_is_sent() -> None:
    events = both(b"a1 LOGIN {101}\r\na2 NOOP\r\n")
    assert events[0] == Write(b"a1 NO [TOOBIG] literal too long\r\n")
    assert events[1] == Request("a2", c.Simple("NOOP"))


def test_a_non_synchronizing_literal_over_the_limit_is_skipped_unkept() -> None:
    events = both(b"a1 LOGIN {150+}\r\n" + b"x" * 150 + b" pw\r\na2 NOOP\r\n")
    assert events[0] == Write(b"a1 NO [TOOBIG] literal too long\r\n")
    assert events[1] == Request("a2", c.Simple("NOOP"))


def test_append_literals_are_bounded_by_the_message_size() -> None:
    message = b"Subject: x\r\n\r\n" + b"y" * 500
    events = both(
        b"a1 APPEND INBOX {%d+}\r\n" % len(message) + message + b"\r\n", state=State.AUTHENTICATED
    )
    assert events[0] == Request("a1", c.Append("INBOX", (), None, message))
    refused = both(b"a1 APPEND INBOX {1001}\r\n", state=State.AUTHENTICATED)
    assert refused[0] == Write(b"a1 NO [TOOBIG] literal too long\r\n")


def test_a_line_over_the_limit_is_dropped_to_its_end_and_framing_recovers() -> None:
    events = both(b"a1 NOOP " + b"x" * 300 + b"\r\na2 NOOP\r\n")
    assert events[0] == Write(b"a1 BAD line too long\r\n")
    assert events[1] == Request("a2", c.Simple("NOOP"))


def test_a_command_over_the_whole_limit_is_refused() -> None:
    literals = b"".join(b" {90+}\r\n" + b"u" * 90 for _ in range(5))
    events = both(b"a1 ID (" + literals[1:] + b")\r\na2 NOOP\r\n")
    assert events[0] == Write(b"a1 NO [TOOBIG] literal too long\r\n")
    assert events[1] == Request("a2", c.Simple("NOOP"))


# -- the state machine ----------------------------------------------------------------


def test_login_before_tls_is_refused_with_privacyrequired_and_logindisabled_offered() -> None:
    conn = ImapConnection(CONFIG, tls=False)
    assert b"LOGINDISABLED" in conn.greeting() and b"STARTTLS" in conn.greeting()
    assert both(b"a LOGIN u p\r\n", tls=False)[0] == Write(
        b"a NO [PRIVACYREQUIRED] log in over TLS\r\n"
    )
    assert both(b"a AUTHENTICATE PLAIN AHUAcA==\r\n", tls=False)[0] == Write(
        b"a NO [PRIVACYREQUIRED] log in over TLS\r\n"
    )


def test_no_continuation_for_a_password_literal_before_tls() -> None:
    events = both(b"a LOGIN {3}\r\na2 NOOP\r\n", tls=False)
    assert events[0] == Write(b"a NO [PRIVACYREQUIRED] log in over TLS\r\n")
    assert events[1] == Request("a2", c.Simple("NOOP"))


def test_no_continuation_for_a_literal_of_a_command_refused_in_this_state() -> None:
    events = both(b"a APPEND INBOX {3}\r\n")
    assert events[0] == Write(b"a BAD command refused before its literal\r\n")


def test_plaintext_login_when_the_listener_allows_it() -> None:
    conn = ImapConnection(ImapConfig("h", plaintext_login=True), tls=False)
    assert b"AUTH=PLAIN" in conn.greeting()
    conn.receive_data(b"a LOGIN u p\r\n")
    assert conn.next_event() == Request("a", c.Login("u", "p"))


def test_commands_outside_their_state_get_bad() -> None:
    assert both(b"a FETCH 1 FLAGS\r\n", state=State.AUTHENTICATED)[0] == Write(
        b"a BAD FETCH is not allowed in the authenticated state\r\n"
    )
    assert both(b"a SELECT INBOX\r\n")[0] == Write(
        b"a BAD SELECT is not allowed in the not authenticated state\r\n"
    )


def test_starttls_drops_what_was_pipelined_behind_it() -> None:
    conn = ImapConnection(CONFIG, tls=False)
    conn.receive_data(b"a STARTTLS\r\nb LOGIN u p\r\n")
    assert conn.next_event() == StartTls("a")
    conn.start_tls()
    assert conn.next_event() is None
    assert conn.tls and b"STARTTLS" not in conn.greeting()


def test_authenticate_plain_with_an_initial_response_and_with_a_continuation() -> None:
    assert both(b"a AUTHENTICATE PLAIN AGJvYgBwdw==\r\n")[0] == Credentials("a", "", "bob", "pw")
    events = both(b"a AUTHENTICATE plain\r\nAGJvYgBwdw==\r\n")
    assert events[:2] == [Write(b"+ \r\n"), Credentials("a", "", "bob", "pw")]
    assert both(b"a AUTHENTICATE PLAIN\r\n*\r\n")[1] == Write(b"a BAD authentication cancelled\r\n")
    assert both(b"a AUTHENTICATE CRAM-MD5\r\n")[0] == Write(
        b"a NO [CANNOT] mechanism not supported\r\n"
    )


def test_idle_ends_at_done() -> None:
    conn = ImapConnection(CONFIG, tls=True)
    conn.state = State.SELECTED
    conn.receive_data(b"a IDLE\r\n")
    assert conn.next_event() == Request("a", c.Simple("IDLE"))
    conn.idle("a")
    conn.receive_data(b"DONE\r\nb NOOP\r\n")
    assert conn.next_event() == IdleDone("a", True)
    assert conn.next_event() == Request("b", c.Simple("NOOP"))


def test_too_many_errors_end_the_connection() -> None:
    events = both(b"a BOGUS\r\n" * 25)
    assert len(events) == CONFIG.max_errors
    last = events[-1]
    assert isinstance(last, Write) and last.data.endswith(b"* BYE too many errors\r\n")


# -- commands ------------------------------------------------------------------------


def test_fetch_attributes_with_sections_partials_and_macros() -> None:
    command = only_request(
        b"a UID FETCH 1:*,7 (FLAGS BODY.PEEK[1.2.HEADER.FIELDS.NOT (X-A)]<5.10> BODY[])\r\n"
    )
    assert command == c.Fetch(
        c.SequenceSet(((1, None), (7, 7))),
        (
            c.FetchAtt("UID"),
            c.FetchAtt("FLAGS"),
            c.FetchAtt(
                "BODY[]", c.Section((1, 2), "HEADER.FIELDS.NOT", ("X-A",)), (5, 10), peek=True
            ),
            c.FetchAtt("BODY[]", c.Section(), None),
        ),
        uid=True,
    )
    fast = only_request(b"a FETCH 2 FAST\r\n")
    assert isinstance(fast, c.Fetch) and [i.name for i in fast.items] == [
        "FLAGS",
        "INTERNALDATE",
        "RFC822.SIZE",
    ]


@pytest.mark.parametrize(
    "bad",
    [b"BODY[0]", b"BODY[MIME]", b"BODY[HEADER.FIELDS]", b"BODY[1]<x>", b"FOO", b"BODY[TEXT.X]"],
)
def test_bad_fetch_attributes_get_bad(bad: bytes) -> None:
    event = both(b"a FETCH 1 " + bad + b"\r\n", state=State.SELECTED)[0]
    assert isinstance(event, Write) and event.data.startswith(b"a BAD ")


def test_sequence_sets_resolve_star_and_reversed_ranges() -> None:
    seq = c.parse_sequence_set("4:2,9,20:*")
    assert seq.select([1, 2, 3, 4, 5, 9, 30]) == [2, 3, 4, 9, 30]
    assert c.parse_sequence_set("*").select([3, 8]) == [8]
    assert c.parse_sequence_set("100:*").select([3, 8]) == [8]  # RFC 3501 6.4.8
    for bad in ("0", "1:", ":2", "1,,2", "a", "1:2:3"):
        with pytest.raises(c.CommandError):
            c.parse_sequence_set(bad)


def test_search_keys_nest_with_or_not_and_lists() -> None:
    command = only_request(
        b'a UID SEARCH CHARSET UTF-8 OR SEEN NOT (FROM "J\xc3\xb6rg" 2:4) '
        b"SINCE 1-Feb-2020 LARGER 10 HEADER X-Y z\r\n"
    )
    assert command == c.Search(
        c.AllOf(
            (
                c.Or(
                    c.FlagKey("\\Seen", True),
                    c.Not(
                        c.AllOf(
                            (
                                c.HeaderKey("FROM", "Jörg"),
                                c.SetKey(c.parse_sequence_set("2:4"), uid=False),
                            )
                        )
                    ),
                ),
                c.DateKey(False, "SINCE", dt.date(2020, 2, 1)),
                c.SizeKey(True, 10),
                c.HeaderKey("X-Y", "z"),
            )
        ),
        uid=True,
        charset="UTF-8",
    )


def test_store_copy_move_and_expunge() -> None:
    assert only_request(b"a STORE 1:3 +FLAGS.SILENT (\\Deleted $Junk)\r\n") == c.Store(
        c.parse_sequence_set("1:3"), "+", True, ("\\Deleted", "$Junk"), uid=False
    )
    assert only_request(b"a UID MOVE 5 Trash\r\n") == c.CopyMove(
        c.parse_sequence_set("5"), "Trash", True, move=True
    )
    assert only_request(b"a UID EXPUNGE 4:5\r\n") == c.Expunge(c.parse_sequence_set("4:5"))
    event = both(b"a STORE 1 FLAGS (\\Recent)\r\n", state=State.SELECTED)[0]
    assert isinstance(event, Write) and event.data.startswith(b"a BAD")


def test_mailbox_names_are_modified_utf7_and_inbox_is_case_insensitive() -> None:
    assert only_request(b"a SELECT inbox\r\n", State.AUTHENTICATED) == c.Select(
        "INBOX", read_only=False
    )
    assert only_request(b"a EXAMINE &ZeVnLIqe-\r\n", State.AUTHENTICATED) == c.Select(
        "日本語", read_only=True
    )
    assert only_request(
        b'a LIST (SPECIAL-USE) "" ("*" "%") RETURN (CHILDREN STATUS (MESSAGES))\r\n',
        State.AUTHENTICATED,
    ) == c.ListCommand("", ("*", "%"), False, ("SPECIAL-USE",), ("CHILDREN",), ("MESSAGES",))


def test_append_with_flags_and_internal_date() -> None:
    command = only_request(
        b'a APPEND Sent (\\Seen) " 7-Feb-2024 10:11:12 +0100" {2+}\r\nhi\r\n', State.AUTHENTICATED
    )
    assert command == c.Append(
        "Sent",
        ("\\Seen",),
        dt.datetime(2024, 2, 7, 10, 11, 12, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        b"hi",
    )
