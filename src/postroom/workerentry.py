"""An accept worker started again after one died: ``python -m postroom.workerentry``.

The primary starts it (``workerprocs.WorkerProcesses``) with SIGHUP blocked, the listening
sockets and its two pipes inherited, and its setup pickled on standard input."""

from __future__ import annotations

import signal
import sys

__all__ = ["main"]


def main() -> int:
    # Ignored before it is let through: a reload while starting is a no-op (the start
    # reads the files); the worker's event loop handles SIGHUP from then on.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    from postroom.runtime import run_restarted_worker
    from postroom.workerprocs import read_setup

    return run_restarted_worker(read_setup(sys.stdin.buffer))


if __name__ == "__main__":
    sys.exit(main())
