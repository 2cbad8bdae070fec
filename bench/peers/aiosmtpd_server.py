"""The plain-Python baseline: aiosmtpd with a handler that fsyncs each message, or not.

Runs in its own venv (bench/.peers/aiosmtpd-venv), started by bench/systems/aiosmtpd.py:
    python aiosmtpd_server.py --port 2525 --mode fsync --spool DIR
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

LIMIT = 30 * 1024 * 1024


class NullHandler:
    """250 at once; the message is dropped."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return "250 2.0.0 Ok: discarded"


class FsyncHandler:
    """Write the message to its own file and fsync it, then 250 (blocking, as most do)."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self.sequence = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        path = self.spool / f"{os.getpid()}.{next(self.sequence)}.eml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, envelope.original_content)
            os.fsync(fd)
        finally:
            os.close(fd)
        return "250 2.0.0 Ok: queued"


async def serve(port: int, handler: object) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.bench.test", data_size_limit=LIMIT),
        host="127.0.0.1",
        port=port,
        backlog=1024,
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("fsync", "null"), required=True)
    parser.add_argument("--spool", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    handler = FsyncHandler(args.spool) if args.mode == "fsync" else NullHandler()
    asyncio.run(serve(args.port, handler))


if __name__ == "__main__":
    main()
