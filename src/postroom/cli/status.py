"""``postroom status``: is the server running and working, what waits in the queue, how
the mailers are doing, what failed lately, and how much disk is left.

The running server is asked over its control socket in the data directory
(``net.control``), so the API need not be enabled; the queue, the mailers' health and
the failed attempts are read from the store, so they are shown when no server runs too.
Exit code: 0 running and ready, 1 running with a failing part (or not answering), 3 not
running (as an LSB init script's ``status``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from pydantic import ByteSize, TypeAdapter, ValidationError

from postroom.cli import AppContext, config_option, pass_app
from postroom.cli.mailerhealth import (
    COLUMNS,
    MailerState,
    mailer_rows,
    mailer_states,
    mailers_json,
    read_usage,
)
from postroom.cli.render import (
    emit_json,
    format_duration,
    format_size,
    iso_time,
    print_fields,
    print_table,
    printable,
)
from postroom.config.discover import ConfigSource
from postroom.config.settings import IMAP_ROLES, POP3_ROLES, SMTP_ROLES, Settings
from postroom.net.control import NoAnswer, ask_status, control_path, left_behind
from postroom.store import Store
from postroom.store.instance import store_exists
from postroom.store.models import Attempt, QueueSummary

__all__ = ["status"]

EXIT_FAILING = 1
EXIT_NOT_RUNNING = 3  # LSB: "program is not running"
_FAILURES_SHOWN = 5
_MIN_FREE = "1GB"


def _size(_ctx: click.Context, _param: click.Parameter, value: str) -> int:
    try:
        return int(TypeAdapter(ByteSize).validate_python(value))
    except ValidationError as exc:
        raise click.BadParameter(f"{value!r} is not a size such as 500MB or 2GiB") from exc


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--min-free",
    "min_free",
    default=_MIN_FREE,
    show_default=True,
    metavar="SIZE",
    callback=_size,
    help="Warn when less disk space is free for the data directory (500MB, 2GiB).",
)
@config_option
@pass_app
def status(app: AppContext, as_json: bool, min_free: int) -> None:
    """Show whether the server runs (pid, uptime, listeners) and works, the queue, the
    mailers' health, the latest failures and the disk space left. Exit 0 when running
    and ready, 1 when a part is failing, 3 when no server runs."""
    settings = app.settings
    facts = _store_facts(app, settings, time.time())
    report = _report(settings, app.source, facts, min_free)
    if as_json:
        emit_json(report)
    else:
        _print(report, facts.mailers if facts else [])
    raise click.exceptions.Exit(_exit_code(report))


# -- gathering ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StoreFacts:
    at: float
    queue: QueueSummary
    mailers: list[MailerState]
    failures: list[Attempt]


def _report(
    settings: Settings, source: ConfigSource, facts: _StoreFacts | None, min_free: int
) -> dict[str, Any]:
    """The documented ``status --json`` object."""
    server, problem = _ask(settings)
    paused = server["delivery"]["paused"] if server else settings.delivery.paused
    running = server is not None or problem is not None
    report: dict[str, Any] = {
        "config": str(source.path) if source.path is not None else None,
        "running": running,
        "ready": server is not None and not server["failing"],
        "problem": problem if running else _not_running(settings),
        "server": _server_json(server) if server else None,
        "failing": [_failing_json(p) for p in server["failing"]] if server else [],
        "delivery": {
            "paused": paused,
            "in_flight": server["delivery"]["in_flight"] if server else 0,
        },
        "queue": _queue_json(facts.queue, facts.at) if facts else None,
        "mailers": mailers_json(facts.mailers) if facts else [],
        "recent_failures": [_failure_json(a) for a in facts.failures] if facts else [],
        "faults": [_fault_json(f) for f in server["faults"]] if server else [],
        "disk": _disk(settings.data_dir, min_free),
    }
    report["warnings"] = _warnings(report, settings)
    return report


def _ask(settings: Settings) -> tuple[dict[str, Any] | None, str | None]:
    """The server's own description, or why there is none although one listens."""
    try:
        return ask_status(settings.data_dir), None
    except NoAnswer as exc:
        return None, str(exc)


def _not_running(settings: Settings) -> str:
    path = control_path(settings.data_dir)
    if left_behind(settings.data_dir):
        return f"not running ({path} was left by a server that did not stop cleanly)"
    return f"not running (no server answers at {path})"


def _store_facts(app: AppContext, settings: Settings, now: float) -> _StoreFacts | None:
    """The queue, the mailers and the latest failures; None when there is no store."""
    if not store_exists(settings.storage_url):
        return None

    async def read(store: Store) -> _StoreFacts:
        usage = await read_usage(store, now)
        summary = await store.queue_summary()
        failures = await store.recent_failures(_FAILURES_SHOWN)
        return _StoreFacts(now, summary, mailer_states(settings, usage), failures)

    return app.run(read)


def _server_json(server: dict[str, Any]) -> dict[str, Any]:
    return {
        "pid": server["pid"],
        "version": server["version"],
        "started_at": iso_time(server["started_at"]),
        "uptime_seconds": round(server["uptime"]),
        "data_dir": server["data_dir"],
        "workers": server["workers"],
        "listeners": server["listeners"],
        "api": server["api"],
    }


def _failing_json(part: dict[str, Any]) -> dict[str, Any]:
    return {**part, "since": iso_time(part["since"])}


def _fault_json(fault: dict[str, Any]) -> dict[str, Any]:
    return {**fault, "at": iso_time(fault["at"])}


def _queue_json(summary: QueueSummary, now: float) -> dict[str, Any]:
    received = summary.oldest_received_at
    return {
        "messages": summary.messages,
        "more_messages": summary.more_messages,  # more wait: messages are counted to a bound
        "queued": summary.queued,
        "deferred": summary.deferred,
        "held": summary.held,
        "oldest": None
        if received is None
        else {
            "id": summary.oldest_id,
            "received_at": iso_time(received),
            "age_seconds": max(0, round(now - received)),
        },
    }


def _failure_json(attempt: Attempt) -> dict[str, Any]:
    return {
        "at": iso_time(attempt.at),
        "message_id": attempt.message_id,
        "recipient": attempt.recipient,
        "mailer": attempt.mailer,
        "disposition": attempt.disposition,
        "reply": {"code": attempt.code, "enhanced": attempt.enhanced, "text": attempt.text},
    }


def _disk(data_dir: Path, min_free: int) -> dict[str, Any]:
    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent  # not made yet: the file system it will be made on
    usage = shutil.disk_usage(where)
    return {
        "path": str(data_dir),
        "free_bytes": usage.free,
        "total_bytes": usage.total,
        "min_free_bytes": min_free,
        "low": usage.free < min_free,
    }


def _warnings(report: dict[str, Any], settings: Settings) -> list[str]:
    warnings = []
    disk = report["disk"]
    if disk["low"]:
        warnings.append(
            f"only {format_size(disk['free_bytes'])} free for {disk['path']}"
            f" (less than {format_size(disk['min_free_bytes'])})"
        )
    if report["delivery"]["paused"]:
        warnings.append("delivery is paused (delivery.paused): mail is queued, not sent")
    queue = report["queue"]
    if queue and queue["held"]:
        noun = "recipient waits" if queue["held"] == 1 else "recipients wait"
        warnings.append(f"{queue['held']} {noun} in held messages (postroom queue release)")
    if queue is None:
        warnings.append(f"no store at {settings.storage_url}: nothing was ever queued here")
    return warnings


def _exit_code(report: dict[str, Any]) -> int:
    if not report["running"]:
        return EXIT_NOT_RUNNING
    return 0 if report["ready"] else EXIT_FAILING


# -- text --------------------------------------------------------------------------------


def _print(report: dict[str, Any], mailers: list[MailerState]) -> None:
    click.echo(_headline(report))
    print_fields(_fields(report))
    for part in report["failing"]:
        click.echo(
            f"failing: {part['part']} ({part['failures']} times since {part['since']}):"
            f" {printable(part['reason'])}"
        )
    for warning in report["warnings"]:
        click.echo(f"warning: {warning}")
    if mailers:
        click.echo("\nMailers")
        print_table(COLUMNS, mailer_rows(mailers), empty="No mailers.")
    if report["recent_failures"]:
        click.echo("\nLatest failed attempts")
        failures = [
            (f["at"], f["message_id"], f["recipient"], f["mailer"], _reply(f["reply"]))
            for f in report["recent_failures"]
        ]
        columns = ("Time", "Message", "Recipient", "Mailer", "Reply")
        print_table(columns, failures, empty="None.")
    if report["faults"]:
        click.echo("\nFaults in the server since it started")
        faults = [(f["at"], f["part"], f["reason"]) for f in report["faults"]]
        print_table(("Time", "Part", "Error"), faults, empty="None.")


def _headline(report: dict[str, Any]) -> str:
    server = report["server"]
    if server is None:
        return f"postroom: {report['problem']}"
    state = "ready" if report["ready"] else "not ready"
    uptime = format_duration(server["uptime_seconds"])
    return f"postroom {server['version']}: running (pid {server['pid']}, up {uptime}), {state}"


_PROTOCOLS = (("SMTP", SMTP_ROLES), ("POP3", POP3_ROLES), ("IMAP", IMAP_ROLES))


def _listener(listener: dict[str, Any]) -> str:
    """``127.0.0.1:2587 submission (STARTTLS)``: POP3 calls its upgrade STLS."""
    upgrade = "STLS" if listener["role"].startswith("pop3") else "STARTTLS"
    tls = "TLS" if listener["tls"] == "implicit" else upgrade
    return f"{_host(listener['address'])}:{listener['port']} {listener['role']} ({tls})"


def _fields(report: dict[str, Any]) -> list[tuple[str, str | None]]:
    server = report["server"]
    fields: list[tuple[str, str | None]] = [("Config", report["config"] or "built-in defaults")]
    if server is not None:
        for protocol, roles in _PROTOCOLS:
            values = {role.value for role in roles}
            bound = [_listener(lst) for lst in server["listeners"] if lst["role"] in values]
            if bound or protocol == "SMTP":
                fields.append((protocol, ", ".join(bound) or None))
        api = server["api"]
        fields += [
            ("API", f"http://{_host(api['address'])}:{api['port']}" if api else "off"),
            ("Workers", str(server["workers"])),
        ]
    delivery = report["delivery"]
    if delivery["paused"]:
        fields.append(("Delivery", "paused (delivery.paused)"))
    elif server is not None:
        fields.append(("Delivery", f"running, {delivery['in_flight']} in flight"))
    fields.append(("Queue", _queue_line(report["queue"])))
    disk = report["disk"]
    free = f"{format_size(disk['free_bytes'])} free of {format_size(disk['total_bytes'])}"
    fields.append(("Disk", f"{free} for {disk['path']}"))
    return fields


def _queue_line(queue: dict[str, Any] | None) -> str | None:
    if queue is None:
        return None
    counts = f"{queue['queued']} queued, {queue['deferred']} deferred, {queue['held']} held"
    oldest = queue["oldest"]
    if oldest is None:
        return f"{counts}; empty"
    age = format_duration(oldest["age_seconds"])
    more = "more than " if queue.get("more_messages") else ""
    messages = f"{more}{queue['messages']} message{'' if queue['messages'] == 1 else 's'}"
    return f"{counts} in {messages}; oldest {oldest['id']}, {age} old"


def _reply(reply: dict[str, Any]) -> str:
    return " ".join(str(p) for p in (reply["code"], reply["enhanced"], reply["text"]) if p)


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
