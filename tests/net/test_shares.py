"""AcceptShares: each accepting process's count of connections and heartbeat, in memory
every forked process shares; a process's lead is over the live process holding fewest,
and it steps aside by that lead unless its connections are short-lived."""

from __future__ import annotations

import asyncio
import os

from postroom.net.shares import (
    BEAT,
    CHURN,
    FRESH,
    MARGIN,
    MAX_STEP_ASIDE,
    STEP_ASIDE,
    AcceptShares,
)


async def test_a_process_leads_by_its_count_over_the_live_process_holding_fewest() -> None:
    loop = asyncio.get_running_loop()
    shares = AcceptShares(3)
    primary, first, second = (shares.slot(i) for i in range(3))
    for slot in (primary, first, second):
        slot.present(loop)
    try:
        now = loop.time()
        for _ in range(5):
            primary.opened()
        for _ in range(2):
            first.opened()
        second.opened()
        assert (shares.held(0), shares.held(1), shares.held(2)) == (5, 2, 1)
        assert primary.lead(now) == 4  # over the second worker, the fewest
        assert first.lead(now) == 1
        assert second.lead(now) == 0  # nobody holds fewer
        second.closed()
        assert primary.lead(now) == 5
        # Heartbeats older than FRESH (a stopped process) are not counted on.
        assert primary.lead(now + FRESH + 0.2) == 0
    finally:
        for slot in (primary, first, second):
            slot.withdraw()


async def test_a_process_that_stopped_or_exited_is_left_no_connection() -> None:
    loop = asyncio.get_running_loop()
    shares = AcceptShares(3)
    primary, first, second = (shares.slot(i) for i in range(3))
    for slot in (primary, first, second):
        slot.present(loop)
    for _ in range(4):
        primary.opened()
    now = loop.time()
    assert primary.lead(now) == 4
    first.withdraw()  # draining at SIGTERM: it serves on, and takes nothing new
    first.closed()
    assert shares.held(1) is None
    assert primary.lead(now) == 4  # the second worker still holds none
    shares.absent(2)  # the primary saw it exit (even SIGKILL)
    assert shares.held(2) is None
    assert primary.lead(now) == 0
    replacement = shares.slot(2)  # a new process: its own view of the same memory
    replacement.present(loop)
    assert shares.held(2) == 0  # starts empty, beating
    assert primary.lead(loop.time()) == 4
    for slot in (primary, second, replacement):
        slot.withdraw()


def test_a_forked_process_counts_in_the_same_memory() -> None:
    shares = AcceptShares(2)
    pid = os.fork()
    if pid == 0:  # the child: what a worker does with its slot
        code = 1
        try:
            worker = shares.slot(1)
            worker.present(asyncio.new_event_loop())
            for _ in range(3):
                worker.opened()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert shares.held(1) == 3
    assert shares.held(0) is None  # the primary has not started accepting


async def test_a_process_mapping_the_memory_file_anew_shares_the_counts() -> None:
    """A worker started again as a fresh interpreter inherits the file's descriptor, not
    the mapping: mapped anew, it reads the others' counts and they read its own."""
    loop = asyncio.get_running_loop()
    shares = AcceptShares(2)
    again = AcceptShares(2, os.dup(shares.fd))
    primary, restarted = shares.slot(0), again.slot(1)
    assert again.held(0) is None and again.held(1) is None  # mapping anew resets nothing
    primary.present(loop)
    restarted.present(loop)
    try:
        for _ in range(3):
            primary.opened()
        restarted.opened()
        assert (again.held(0), shares.held(1)) == (3, 1)
        assert primary.lead(loop.time()) == 2
    finally:
        primary.withdraw()
        restarted.withdraw()


async def test_others_live_counts_only_processes_accepting_with_a_fresh_heartbeat() -> None:
    """What the primary's reserve listener asks before it reads the socket."""
    loop = asyncio.get_running_loop()
    shares = AcceptShares(3)
    primary, first, second = (shares.slot(i) for i in range(3))
    now = loop.time()
    assert not primary.others_live(now)  # nobody accepts yet
    first.present(loop)
    try:
        assert primary.others_live(loop.time())
        assert not primary.others_live(loop.time() + FRESH + 0.2)  # its loop stuck
        assert not first.others_live(loop.time())  # the primary never said it accepts
        first.withdraw()
        assert not primary.others_live(loop.time())
        second.present(loop)
        assert primary.others_live(loop.time())
    finally:
        for slot in (first, second):
            slot.withdraw()


async def test_a_process_steps_aside_by_its_lead_beyond_the_margin_for_a_bounded_time() -> None:
    loop = asyncio.get_running_loop()
    shares = AcceptShares(2)
    mine, other = shares.slot(0), shares.slot(1)
    for slot in (mine, other):
        slot.present(loop)
    try:
        now = loop.time()
        for _ in range(MARGIN - 1):
            mine.opened()
        assert mine.step_aside(now) == 0.0  # within the margin: takes it
        mine.opened()
        assert mine.step_aside(now) == STEP_ASIDE
        for _ in range(3):
            mine.opened()
        assert mine.step_aside(now) == 4 * STEP_ASIDE
        for _ in range(20):
            mine.opened()
        assert mine.step_aside(now) == MAX_STEP_ASIDE  # a client waits no longer
        assert mine.step_aside(now + FRESH + 0.2) == 0.0  # the other's loop is stuck
    finally:
        for slot in (mine, other):
            slot.withdraw()


async def test_a_process_whose_connections_end_at_once_never_steps_aside() -> None:
    """An application opening a connection per message: CHURN or more closed in a beat.
    Judged once a beat has passed, on the rate since the last judgement."""
    loop = asyncio.get_running_loop()
    shares = AcceptShares(2)
    mine, other = shares.slot(0), shares.slot(1)
    for slot in (mine, other):
        slot.present(loop)

    def churn(count: int) -> None:
        for _ in range(count):
            mine.opened()
            mine.closed()

    try:
        for _ in range(MARGIN + 3):  # held: the lead stays
            mine.opened()
        start = loop.time()
        assert not mine.short_lived(start)  # nothing closed yet
        assert mine.step_aside(start) > 0
        churn(2 * CHURN)
        halfway = start + BEAT / 2
        assert not mine.short_lived(halfway)  # judged once a beat, not at every close
        assert mine.step_aside(halfway) > 0
        judged = start + 1.5 * BEAT
        assert mine.short_lived(judged)  # 2 x CHURN in 1.5 beats
        assert mine.step_aside(judged) == 0.0
        churn(CHURN)
        later = judged + 1.5 * BEAT
        assert not mine.short_lived(later)  # CHURN in 1.5 beats: too few
        assert mine.step_aside(later) > 0
    finally:
        for slot in (mine, other):
            slot.withdraw()
