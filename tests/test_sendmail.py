"""postroom-sendmail: the installed console script, run as PHP, cron and git run sendmail;
then the queue is read back with the real `postroom` CLI and the store."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from postroom.sendmail import Exit, Options, SendmailError, parse_args, prepare, read_message
from postroom.store import open_store
from tests.support.servers import make_store, start_process, write_config
from tests.support.smtp_peers import SmtpPeer

SENDMAIL = str(Path(sys.executable).with_name("postroom-sendmail"))
USER = pwd.getpwuid(os.getuid()).pw_name


@dataclass
class Queue:
    """A configuration and the store it names, read back through the real CLI."""

    config: Path
    data_dir: Path

    def sendmail(self, *args: str, stdin: bytes, env: dict[str, str] | None = None) -> Run:
        environment = {**os.environ, "POSTROOM_CONFIG": str(self.config), **(env or {})}
        done = subprocess.run(
            [SENDMAIL, *args],
            check=False,
            input=stdin,
            capture_output=True,
            env=environment,
            timeout=60,
        )
        return Run(done.returncode, done.stderr.decode(), done.stdout.decode())

    def postroom(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "postroom", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def messages(self) -> list[dict[str, object]]:
        listed: list[dict[str, object]] = json.loads(self.postroom("queue", "list", "--json"))
        return listed

    def only(self) -> dict[str, object]:
        messages = self.messages()
        assert len(messages) == 1, messages
        return messages[0]

    def body(self, message_id: str) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.raw(message_id), policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed

    def raw(self, message_id: str) -> bytes:
        async def read() -> bytes | None:
            store = await open_store(f"sqlite:///{self.data_dir / 'postroom.db'}")
            try:
                return await store.read_body(message_id)
            finally:
                await store.aclose()

        data = asyncio.run(read())
        assert data is not None
        return data


@dataclass
class Run:
    code: int
    stderr: str
    stdout: str = ""


def recipients(message: dict[str, object]) -> list[str]:
    listed = message["recipients"]
    assert isinstance(listed, list)
    return sorted(r["address"] for r in listed)


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    data = tmp_path / "data"
    config = tmp_path / "postroom.toml"
    # The apps below send as example.com, which the local users are allowed here.
    config.write_text(
        f'hostname = "mail.test"\ndata_dir = "{data}"\n'
        '[senders.sendmail]\nsender_domains = ["example.com"]\n'
    )
    return Queue(make_store(config), data)


PHP_MESSAGE = (
    b"To: alice@example.net, Bob <bob@example.org>\n"
    b"Cc: carol@example.com\n"
    b"Bcc: hidden@example.org,\n another@example.org\n"
    b"Subject: Order 1234\n"
    b"X-PHP-Originating-Script: 0:shop.php\n"
    b"\n"
    b"Thanks for your order.\n"
    b".\n"
    b"A lone dot above is text: PHP calls sendmail -i.\n"
)


def test_php_mail_t_i_takes_recipients_from_headers_and_removes_bcc(queue: Queue) -> None:
    run = queue.sendmail("-t", "-i", stdin=PHP_MESSAGE)
    assert (run.code, run.stderr) == (0, "")
    message = queue.only()
    assert message["source"] == {
        "kind": "sendmail",
        "principal": USER,
        "client_ip": None,
        "helo": None,
        "protocol": None,
        "tls": None,
    }
    assert message["sender"] == f"{USER}@mail.test"
    assert recipients(message) == [
        "alice@example.net",
        "another@example.org",
        "bob@example.org",
        "carol@example.com",
        "hidden@example.org",
    ]
    body = queue.body(str(message["id"]))
    assert body["Bcc"] is None
    assert b"hidden@example.org" not in body.as_bytes()
    assert body["From"].addresses[0].addr_spec == f"{USER}@mail.test"
    assert body["Date"] is not None
    assert body["Message-ID"].endswith("@mail.test>")
    assert body["Received"].startswith("by mail.test (postroom)")
    assert f"with local id {message['id']}" in body["Received"]
    assert "A lone dot above is text" in body.get_content()


def test_php_additional_parameters_f_sets_the_envelope_sender(queue: Queue) -> None:
    # php.ini sendmail_path "postroom-sendmail -t -i" plus mail()'s "-fshop@example.com".
    run = queue.sendmail("-t", "-i", "-fshop@example.com", stdin=PHP_MESSAGE)
    assert run.code == 0, run.stderr
    message = queue.only()
    assert message["sender"] == "shop@example.com"
    assert queue.body(str(message["id"]))["From"] == "shop@example.com"


CRON_MESSAGE = (
    b"From: root (Cron Daemon)\n"
    b"To: root\n"
    b"Subject: Cron <root@host> /usr/local/bin/backup\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: text/plain; charset="UTF-8"\n'
    b"Content-Transfer-Encoding: 8bit\n"
    b"X-Cron-Env: <SHELL=/bin/sh>\n"
    b"\n"
    b"backup finished: 3 files, 12 M\xc3\xa9gaoctets\n"
)


def test_debian_cron_flags_and_a_bare_user_name(queue: Queue) -> None:
    # Debian's cron: "-FCronDaemon -i -B8BITMIME -oem <MAILTO>".
    run = queue.sendmail("-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root", stdin=CRON_MESSAGE)
    assert run.code == 0, run.stderr
    message = queue.only()
    assert recipients(message) == ["root@mail.test"]
    assert message["sender"] == f"{USER}@mail.test"
    assert message["body"] == "8BITMIME"
    body = queue.body(str(message["id"]))
    assert body.get_all("From") == ["root"]  # the message's own From is kept
    assert b"\r\nFrom: root (Cron Daemon)\r\n" in queue.raw(str(message["id"]))
    assert "Mégaoctets" in body.get_content()


def test_cronie_flags_with_t_and_f(queue: Queue) -> None:
    # cronie: "-FCronDaemon -i -odi -oem -oi -t -f <MAILFROM>", the message without From.
    message_text = CRON_MESSAGE.replace(b"From: root (Cron Daemon)\n", b"")
    args = ("-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root")
    run = queue.sendmail(*args, stdin=message_text)
    assert run.code == 0, run.stderr
    message = queue.only()
    assert (message["sender"], recipients(message)) == ("root@mail.test", ["root@mail.test"])
    assert queue.body(str(message["id"]))["From"] == "CronDaemon <root@mail.test>"


GIT_MESSAGE = (
    b"From: Dev Eloper <dev@example.com>\n"
    b"To: list@example.org\n"
    b"Cc: maintainer@example.net\n"
    b"Subject: [PATCH] fix the frobnicator\n"
    b"Date: Sun, 29 Nov 2026 05:00:00 +0000\n"
    b"Message-ID: <20261129050000.1-dev@example.com>\n"
    b"\n"
    b"---\n"
    b" frob.c | 2 +-\n"
)


@pytest.mark.parametrize("sender", [None, "dev@example.com"])
def test_git_send_email_passes_recipients_as_arguments(queue: Queue, sender: str | None) -> None:
    args = ["-i", *(["-f", sender] if sender else []), "list@example.org"]
    args.append("maintainer@example.net, other@example.net")  # an address list in one argument
    run = queue.sendmail(*args, stdin=GIT_MESSAGE)
    assert run.code == 0, run.stderr
    message = queue.only()
    assert message["sender"] == (sender or f"{USER}@mail.test")
    assert recipients(message) == [
        "list@example.org",
        "maintainer@example.net",
        "other@example.net",
    ]
    body = queue.body(str(message["id"]))
    assert body.get_all("Message-ID") == ["<20261129050000.1-dev@example.com>"]
    assert body.get_all("Date") == ["Sun, 29 Nov 2026 05:00:00 +0000"]


def test_without_i_a_lone_dot_ends_the_message(queue: Queue) -> None:
    run = queue.sendmail("a@example.net", stdin=b"Subject: x\n\nkept\n.\nnot read\n")
    assert run.code == 0, run.stderr
    content = queue.body(str(queue.only()["id"])).get_content()
    assert "kept" in content
    assert "not read" not in content


def test_dsn_options_are_kept_and_v_reports_the_queue_id(queue: Queue) -> None:
    args = ("-v", "-N", "success,failure", "-R", "hdrs", "-V", "env-1", "a@example.net")
    run = queue.sendmail(*args, stdin=b"Subject: x\n\nhi\n")
    assert run.code == 0
    message = queue.only()
    assert run.stderr == (f"postroom-sendmail: queued as {message['id']}; no server is listening\n")
    assert message["dsn"] == {"ret": "HDRS", "envid": "env-1"}
    listed = message["recipients"]
    assert isinstance(listed, list)
    assert set(listed[0]["notify"].split(",")) == {"FAILURE", "SUCCESS"}


def test_C_names_the_configuration_file(queue: Queue, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other.toml"
    shutil.copy(queue.config, elsewhere)
    env = {"POSTROOM_CONFIG": str(tmp_path / "missing.toml")}
    run = queue.sendmail("-C", str(elsewhere), "a@example.net", stdin=b"hi\n", env=env)
    assert run.code == 0, run.stderr
    assert recipients(queue.only()) == ["a@example.net"]


# -- every error exit -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("-t", "-i"), Exit.USAGE, "no recipients"),
        (("-i",), Exit.USAGE, "no recipients"),
        (("-bs",), Exit.USAGE, "-bs: no SMTP on standard input"),
        (("-bv", "a@example.net"), Exit.USAGE, "-bv: no address verification"),
        (("-q",), Exit.USAGE, "requires argument"),
        (("-I",), Exit.USAGE, "-I: no aliases file"),
        (("-Z", "a@example.net"), Exit.USAGE, "option -Z not recognized"),
        (("-N", "sometimes", "a@example.net"), Exit.USAGE, "-N sometimes"),
        (("-B", "9BIT", "a@example.net"), Exit.USAGE, "-B 9BIT"),
        (("bad@@example.net",), Exit.DATAERR, "recipient 'bad@@example.net'"),
        (("-f", "a b@example.net", "x@example.net"), Exit.DATAERR, "sender"),
        # An option value never starts with "-": "-f -t" is a mistake or an injection.
        (("-f", "-t", "x@example.net"), Exit.USAGE, "-f -t: an option value cannot start"),
        (("-r-oQ", "x@example.net"), Exit.USAGE, "-r -oQ: an option value cannot start"),
        (("-F", "-bs", "x@example.net"), Exit.USAGE, "-F -bs"),
        (("-C", "--help", "x@example.net"), Exit.USAGE, "-C --help"),
        # Help asked for with a message to send: not queued, so not exit 0.
        (("-h", "x@example.net"), Exit.USAGE, "-h/--help takes no recipients"),
        (("--help", "-t"), Exit.USAGE, "-h/--help takes no recipients"),
        (("--version", "x@example.net"), Exit.USAGE, "--version takes no recipients"),
    ],
)
def test_usage_and_data_errors(queue: Queue, args: tuple[str, ...], code: int, words: str) -> None:
    run = queue.sendmail(*args, stdin=b"Subject: x\n\nhi\n")
    assert run.code == code
    assert run.stderr.startswith("postroom-sendmail: ")
    assert words in run.stderr
    assert run.stderr.count("\n") == 1  # one line, no traceback
    assert queue.messages() == []


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_prints_the_usage_and_queues_nothing(queue: Queue, flag: str) -> None:
    run = queue.sendmail(flag, stdin=b"To: a@example.net\nSubject: x\n\nhi\n")
    assert (run.code, run.stderr) == (Exit.OK, "")
    assert run.stdout.startswith("usage: postroom-sendmail [options] [recipient ...]")
    assert "-t " in run.stdout and "Exit status" in run.stdout
    assert queue.messages() == []


def test_version_prints_the_installed_version_and_queues_nothing(queue: Queue) -> None:
    run = queue.sendmail("--version", stdin=b"To: a@example.net\nSubject: x\n\nhi\n")
    assert (run.code, run.stderr) == (Exit.OK, "")
    assert run.stdout == f"postroom-sendmail (postroom) {version('postroom')}\n"
    assert queue.messages() == []


def test_t_applies_max_recipients(queue: Queue) -> None:
    to = ", ".join(f"user{n}@example.net" for n in range(200))
    run = queue.sendmail("-t", "-i", stdin=f"To: {to}\nSubject: x\n\nhi\n".encode())
    assert (run.code, run.stderr) == (
        Exit.DATAERR,
        "postroom-sendmail: too many recipients: 200 (limits.max_recipients is 100)\n",
    )
    assert queue.messages() == []
    # At the limit, counted once per address, the message is queued.
    to = ", ".join(f"user{n % 100}@example.net" for n in range(150))
    run = queue.sendmail("-t", "-i", stdin=f"To: {to}\nSubject: x\n\nhi\n".encode())
    assert run.code == Exit.OK, run.stderr
    assert len(recipients(queue.only())) == 100


def test_a_malformed_header_address_with_t_is_a_data_error(queue: Queue) -> None:
    run = queue.sendmail("-t", stdin=b'To: "broken <x@\nSubject: x\n\nhi\n')
    assert (run.code, run.stderr) == (
        Exit.DATAERR,
        "postroom-sendmail: the To header holds an invalid address\n",
    )


def test_a_message_over_the_size_limit_is_a_data_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "small.toml"
    config.write_text(
        f'data_dir = "{data}"\nhostname = "mail.test"\n[limits]\nmax_message_size = 2048\n'
    )
    queue = Queue(make_store(config), data)
    run = queue.sendmail("-i", "a@example.net", stdin=b"Subject: x\n\n" + b"x" * 4096)
    assert run.code == Exit.DATAERR
    assert "too big" in run.stderr
    assert queue.messages() == []


@pytest.mark.parametrize(
    ("recipient", "reply"),
    [
        ("nobody", "550 5.1.1"),  # an unknown user at a local domain
        ("a/b@mail.test", "553 5.1.3"),  # cannot be a mailbox: refused, not bounced later
    ],
)
def test_a_refused_local_recipient_is_no_user(queue: Queue, recipient: str, reply: str) -> None:
    queue.postroom("domain", "add", "mail.test")
    run = queue.sendmail("-i", recipient, stdin=b"Subject: x\n\nhi\n")
    assert run.code == Exit.NOUSER
    assert run.stderr.startswith(f"postroom-sendmail: refused: {reply} ")
    assert queue.messages() == []


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "no such file"),
        ("<a directory>", "cannot read"),
        ("hostname = [unclosed\n", "invalid TOML"),
        ("colour = 'blue'\n", "unknown key"),
    ],
)
def test_a_configuration_that_cannot_be_used_is_a_config_error(
    tmp_path: Path, content: str | None, words: str
) -> None:
    config = tmp_path / "postroom.toml"
    if content == "<a directory>":
        config.mkdir()
    elif content is not None:
        config.write_text(content)
    run = Queue(config, tmp_path / "data").sendmail("a@example.net", stdin=b"hi\n")
    assert run.code == Exit.CONFIG
    assert words in run.stderr
    assert run.stderr.count("\n") == 1


def test_without_a_store_the_message_is_not_queued_and_nothing_is_made(tmp_path: Path) -> None:
    """Mail queued into a new store that no server reads would wait forever: exit 75, so
    the caller keeps it, and the data directory stays as it was (absent)."""
    config = tmp_path / "postroom.toml"
    config.write_text(f'hostname = "mail.test"\ndata_dir = "{tmp_path / "data"}"\n')
    run = Queue(config, tmp_path / "data").sendmail("-i", "a@example.net", stdin=b"hi\n")
    assert run.code == Exit.TEMPFAIL
    assert run.stderr == (
        f"postroom-sendmail: cannot queue the message: no store at {tmp_path}/data/postroom.db\n"
    )
    assert not (tmp_path / "data").exists()


def test_an_unusable_store_is_a_temporary_failure(tmp_path: Path) -> None:
    # Root ignores permission bits, so the store is made unusable in ways root cannot
    # write through: a database file that is not SQLite, and a data directory whose
    # parent is a regular file.
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 100)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for extra in (f'storage = "sqlite:///{garbage}"', f'data_dir = "{blocker}/data"'):
        config = tmp_path / "postroom.toml"
        config.write_text(f'hostname = "mail.test"\n{extra}\n')
        run = Queue(config, tmp_path).sendmail("-i", "a@example.net", stdin=b"hi\n")
        assert run.code == Exit.TEMPFAIL
        assert run.stderr.startswith("postroom-sendmail: cannot queue the message: ")
        assert run.stderr.count("\n") == 1
    assert garbage.read_bytes() == b"this is not a database\n" * 100


# -- the pure parts -----------------------------------------------------------------------


def test_common_ignored_flags_are_accepted() -> None:
    ignored = ["-odi", "-odb", "-oee", "-oem", "-om", "-v", "-bm", "-G", "-U", "-n", "-h", "3"]
    options = parse_args([*ignored, "-h5", "x@y.z"])
    assert options.recipients == ("x@y.z",)
    assert options.dot_ends_input  # none of them is -i
    assert parse_args(["-oi", "x@y.z"]).dot_ends_input is False
    assert parse_args(["-ti"]).extract and not parse_args(["-ti"]).dot_ends_input
    assert parse_args(["--config", "/etc/p.toml", "-r", "a@b.c"]).config == Path("/etc/p.toml")
    assert parse_args(["-r", "a@b.c"]).sender == "a@b.c"


def test_a_message_without_a_header_gets_one() -> None:
    prepared = prepare(
        b"just text\nand more\n",
        Options(recipients=("a@example.net",), full_name="Jos\u00e9"),
        hostname="mail.test",
        user="www-data",
    )
    head, _, body = prepared.data.partition(b"\r\n\r\n")
    assert body == b"just text\nand more\n"  # line endings, Date, Message-ID: intake's
    parsed = email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.default)
    assert parsed["From"] == "Jos\u00e9 <www-data@mail.test>"
    assert head.isascii()


def test_the_null_sender_and_a_bcc_not_taken_without_t() -> None:
    prepared = prepare(
        b"Bcc: x@example.net\nSubject: s\n\nb\n",
        Options(recipients=("a@example.net",), sender="<>"),
        hostname="mail.test",
        user="u",
    )
    assert prepared.sender is None
    assert [str(r.address) for r in prepared.recipients] == ["a@example.net"]  # no -t


def test_reading_stops_at_the_limit() -> None:
    with pytest.raises(SendmailError) as caught:
        read_message(io.BytesIO(b"x" * 100), limit=10, dot_ends_input=True)
    assert caught.value.code == Exit.DATAERR
    assert read_message(io.BytesIO(b"a\n.\nb\n"), limit=10, dot_ends_input=True) == b"a\n"
    assert read_message(io.BytesIO(b"a\n.\nb\n"), limit=10, dot_ends_input=False) == b"a\n.\nb\n"


# -- with a running server ----------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # The wake-up socket lives in the data directory; socket paths are limited to ~108 bytes.
    name = tempfile.mkdtemp(prefix="pr-", dir="/tmp")
    yield Path(name)
    shutil.rmtree(name, ignore_errors=True)


def test_a_running_server_delivers_at_once_when_woken(short_dir: Path) -> None:
    with SmtpPeer("127.0.0.1") as peer:
        extra = (
            f'[[mailers]]\nname = "peer"\ntype = "smtp"\nhost = "127.0.0.1"\nport = {peer.port}\n'
            'tls = "none"\ntimeout = 5\n'
            '[[routes]]\nname = "all"\nmailers = ["peer"]\n'
        )
        config = write_config(short_dir / "postroom.toml", short_dir / "data", extra=extra)
        server = start_process(config, short_dir / "postroom.log")
        try:
            queue = Queue(config, short_dir / "data")
            run = queue.sendmail("-v", "-t", "-i", stdin=PHP_MESSAGE)
            assert run.code == 0
            assert run.stderr.endswith("; a running server was told\n")
            # The idle scheduler looks again only after 60 s; the wake-up makes it look now.
            deadline = time.monotonic() + 30
            while not peer.received and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(peer.received) == 1
            received = peer.received[0]
            assert received.sender == f"{USER}@mail.test"
            assert len(received.recipients) == 5
            assert b"hidden@example.org" not in received.data
        finally:
            server.signal(15)
            server.wait()
