"""A watch reports every change made after ``watch()`` returned."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

from postroom.mailbox.watch import Watchers


async def test_a_change_just_after_the_watch_began_is_not_taken_into_its_baseline(
    tmp_path: Path,
) -> None:
    version = 1
    first_look = threading.Event()  # holds the looker's first look, as a loaded host may

    def look(path: Path) -> int:
        first_look.wait(5)
        return version

    watchers = Watchers(look, interval=0.01)
    async with contextlib.AsyncExitStack() as stack:
        entering = asyncio.ensure_future(stack.enter_async_context(watchers.watch(tmp_path)))
        done, _ = await asyncio.wait([entering], timeout=0.2)
        if not done:  # the watch begins once its baseline is known
            first_look.set()
        watch = await entering
        version = 2  # another process delivers now, after watch() returned
        first_look.set()
        async with asyncio.timeout(5):
            await watch.wait()
        assert watch.version == 2
