"""``postroom send --wait``: follow a queued message in the store until every recipient
is final, saying each attempt as it is recorded.

``watch()`` polls the store with an injected clock and sleep; what it says goes through
two callbacks, ``say`` (one line per attempt, kept) and ``show`` (what it waits for now,
for a spinner), so the command decides how a terminal or a pipe shows them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from postroom.cli.render import format_duration, format_time, printable
from postroom.clock import Clock
from postroom.store import RecipientStatus, Store, StoredMessage
from postroom.store.models import Attempt

__all__ = ["Ended", "Watched", "attempt_line", "waiting_for", "watch"]

POLL = 0.2  # seconds between looks at the store


class Ended(Enum):
    FINAL = "final"  # every recipient delivered, bounced or expired
    HELD = "held"  # an operator held it: nothing is tried until it is released
    GONE = "gone"  # deleted meanwhile
    TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Watched:
    ended: Ended
    message: StoredMessage | None  # as it was last seen


async def watch(
    store: Store,
    queue_id: str,
    *,
    within: float,
    clock: Clock,
    say: Callable[[str], None],
    show: Callable[[str], None],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Watched:
    """Say every attempt of message ``queue_id`` once, as it appears in the store, until
    every recipient is final, the message is held or gone, or ``within`` seconds have
    passed."""
    deadline = clock.monotonic() + within
    said = 0
    while True:
        # Attempts first: an outcome commits with its attempts, so the message read after
        # them is at least as new, and a deferral's line has its next attempt's time.
        attempts = await store.attempts(queue_id)
        message = await store.message(queue_id)
        if message is None:
            return Watched(Ended.GONE, None)
        ended = _ending(message)
        if ended is not None:
            attempts = await store.attempts(queue_id)  # with those that ended it
        for line in _lines(message, attempts[said:], clock.time()):
            say(line)
        said = len(attempts)
        if ended is not None:
            return Watched(ended, message)
        if clock.monotonic() >= deadline:
            return Watched(Ended.TIMEOUT, message)
        show(waiting_for(message, clock.time()))
        await sleep(POLL)


def _ending(message: StoredMessage) -> Ended | None:
    """FINAL once every recipient is, HELD while it is held; None while it goes on."""
    if all(r.status.is_final for r in message.recipients):
        return Ended.FINAL
    return Ended.HELD if message.held else None


def _lines(message: StoredMessage, new: list[Attempt], now: float) -> list[str]:
    # A recipient's next attempt time belongs after its last attempt of this batch (a
    # failover chain records several at once).
    last = {a.recipient: index for index, a in enumerate(new)}
    states = {r.address: r for r in message.recipients}
    lines = []
    for index, attempt in enumerate(new):
        state = states.get(attempt.recipient)
        next_at = None
        is_last = last[attempt.recipient] == index
        if is_last and state is not None and state.status is RecipientStatus.DEFERRED:
            next_at = state.next_attempt_at
        lines.append(attempt_line(attempt, next_at, now))
    return lines


def attempt_line(attempt: Attempt, next_at: float | None, now: float) -> str:
    """``<time>  <recipient>  <disposition> by <mailer>: <reply>[; next attempt ...]``."""
    reply = " ".join(
        part for part in (str(attempt.code or ""), attempt.enhanced or "", attempt.text) if part
    )
    line = (
        f"{format_time(attempt.at)}  {printable(attempt.recipient)}  {attempt.disposition}"
        f" by {attempt.mailer}: {printable(reply)}"
    )
    if next_at is not None:
        line += f"; next attempt at {format_time(next_at)} (in {format_duration(next_at - now)})"
    return line


def waiting_for(message: StoredMessage, now: float) -> str:
    """What the message waits for now: its first attempt, or the earliest retry."""
    retries = [
        r.next_attempt_at
        for r in message.recipients
        if r.status is RecipientStatus.DEFERRED and r.next_attempt_at is not None
    ]
    if not retries:
        return f"waiting for {message.id} to be delivered..."
    at = min(retries)
    when = f"in {format_duration(at - now)}" if at > now else "due now"
    return f"waiting for the next attempt at {format_time(at)} ({when})..."
