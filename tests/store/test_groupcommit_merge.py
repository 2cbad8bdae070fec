"""Group commit's merged jobs: neighbours in a batch that share a ``merge`` run as one
call, in order with the others, and run alone again when their batch fails. The
transactor is a list of what happened: the merging is engine-neutral."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from postroom.store.groupcommit import GroupCommitter
from tests.store.factories import writer_held

Log = list[str]


class Recorder:
    """A Transactor whose connection is the log of what ran; with ``fail_merged`` the
    first commit of a transaction that ran a merge fails; with ``lose_merged`` the
    first merge finds the connection lost (and ``lost`` says so until the next begin)."""

    def __init__(self, *, fail_merged: bool = False, lose_merged: bool = False) -> None:
        self.log: Log = []
        self.fail_merged = fail_merged
        self.lose_merged = lose_merged
        self.dead = False

    def connect(self) -> Log:
        return self.log

    def begin(self, conn: Log) -> None:
        self.dead = False  # connected anew
        conn.append("begin")

    def commit(self, conn: Log) -> None:
        begun = len(conn) - conn[::-1].index("begin")
        if self.fail_merged and any("+" in entry for entry in conn[begun:]):
            self.fail_merged = False
            conn.append("commit failed")
            raise RuntimeError("commit failed")
        conn.append("commit")

    def rollback(self, conn: Log) -> None:
        conn.append("rollback")

    def lost(self, conn: Log) -> bool:
        return self.dead

    def close(self, conn: Log) -> None:
        pass


class Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, conn: Log) -> str:
        conn.append(self.name)
        return self.name.upper()


class Together:
    """A merge; its first call finds the connection lost when ``recorder.lose_merged``."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder

    def __call__(self, conn: Log, jobs: list[Callable[[Log], str]]) -> list[str]:
        names = [job.name for job in jobs if isinstance(job, Named)]
        if self.recorder is not None and self.recorder.lose_merged:
            self.recorder.lose_merged, self.recorder.dead = False, True
            conn.append("lost")
            raise OSError("server closed the connection unexpectedly")
        conn.append("+".join(names))
        return [name.upper() for name in names]


together = Together()


async def one_batch(
    committer: GroupCommitter[Log], jobs: list[tuple[str, bool]], merge: Together = together
) -> list[Any]:
    """Submit ``jobs`` (name, merged) while the writer is busy, so they form one batch."""
    async with writer_held(committer):
        tasks = [
            asyncio.ensure_future(committer.submit(Named(name), merge=merge if merged else None))
            for name, merged in jobs
        ]
        for _ in range(3):
            await asyncio.sleep(0)  # each task reaches its submit: all are queued
    return await asyncio.gather(*tasks)


async def test_neighbours_sharing_a_merge_run_as_one_call_in_order() -> None:
    recorder = Recorder()
    committer: GroupCommitter[Log] = GroupCommitter(recorder)
    await committer.start()
    try:
        results = await one_batch(
            committer, [("a", True), ("b", True), ("x", False), ("c", True), ("d", True)]
        )
    finally:
        await committer.aclose()
    assert results == ["A", "B", "X", "C", "D"]
    assert recorder.log[-5:] == ["begin", "a+b", "x", "c+d", "commit"]


async def test_a_failed_batch_runs_each_merged_job_alone() -> None:
    recorder = Recorder(fail_merged=True)
    committer: GroupCommitter[Log] = GroupCommitter(recorder)
    await committer.start()
    try:
        results = await one_batch(committer, [("a", True), ("b", True)])
    finally:
        await committer.aclose()
    assert results == ["A", "B"]
    assert recorder.log[-10:] == [
        "begin", "a+b", "commit failed", "rollback",
        "begin", "a", "commit", "begin", "b", "commit",
    ]  # fmt: skip


async def test_a_batch_that_found_its_connection_lost_runs_again_whole() -> None:
    recorder = Recorder(lose_merged=True)
    committer: GroupCommitter[Log] = GroupCommitter(recorder)
    await committer.start()
    try:
        results = await one_batch(committer, [("a", True), ("b", True)], Together(recorder))
        commits, fallbacks = committer.commits, committer.fallbacks
    finally:
        await committer.aclose()
    assert results == ["A", "B"]
    assert recorder.log[-6:] == ["begin", "lost", "rollback", "begin", "a+b", "commit"]
    assert fallbacks == 0 and commits == 2  # the holder's batch and this one


class LosesOnce(Named):
    """A job whose first run finds the connection lost."""

    def __init__(self, name: str, recorder: Recorder) -> None:
        super().__init__(name)
        self.recorder = recorder

    def __call__(self, conn: Log) -> str:
        if not self.recorder.dead and "lost" not in conn:
            self.recorder.dead = True
            conn.append("lost")
            raise OSError("server closed the connection unexpectedly")
        return super().__call__(conn)


async def test_a_lone_job_that_found_its_connection_lost_runs_again() -> None:
    recorder = Recorder()
    committer: GroupCommitter[Log] = GroupCommitter(recorder)
    await committer.start()
    try:
        assert await committer.submit(LosesOnce("a", recorder)) == "A"
    finally:
        await committer.aclose()
    assert recorder.log[-6:] == ["begin", "lost", "rollback", "begin", "a", "commit"]


async def test_a_job_failing_again_on_its_new_connection_fails_without_a_third_run() -> None:
    recorder = Recorder()
    committer: GroupCommitter[Log] = GroupCommitter(recorder)
    await committer.start()

    def always_lost(conn: Log) -> str:
        recorder.dead = True
        conn.append("lost")
        raise OSError("server closed the connection unexpectedly")

    try:
        with pytest.raises(OSError):
            await committer.submit(always_lost)
    finally:
        await committer.aclose()
    assert recorder.log[-6:] == ["begin", "lost", "rollback", "begin", "lost", "rollback"]
