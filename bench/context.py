"""One harness invocation: its work directory, quiet-host waits, moving files aside."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.figures import Section
from bench.host import NCPU, wait_for_quiet

__all__ = ["Context", "stderr_progress"]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Context:
    workdir: Path
    quiet_threshold: float = 0.10  # of all cores
    quiet_max_wait: float = 300.0
    progress: Callable[[str], None] = stderr_progress
    _count: int = 0
    sections: list[Section] = field(default_factory=list)  # in the order they started

    def __post_init__(self) -> None:
        for path in (self.workdir, self.runs_dir, self.aside_dir):
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)  # Postfix's unprivileged daemons walk into their queue here
        # A work directory kept by an earlier invocation (--keep-workdir): number the runs
        # after the ones it holds, so none is made or put aside over an earlier one.
        held = (*self.runs_dir.iterdir(), *self.aside_dir.iterdir())
        self._count = max((_run_number(path.name) for path in held), default=0)

    @property
    def runs_dir(self) -> Path:
        return self.workdir / "runs"

    @property
    def aside_dir(self) -> Path:
        return self.workdir / "aside"

    def new_rundir(self, label: str) -> Path:
        self._count += 1
        path = self.runs_dir / f"{self._count:03d}-{label}"
        path.mkdir(mode=0o755)
        path.chmod(0o755)
        return path

    def put_aside(self, rundir: Path) -> None:
        """Move a run's files out of the way instead of deleting them.

        Deleting thousands of files makes creating files 2-3x dearer on this ext4 for
        minutes after; they are deleted once, after the last run (``cleanup``).
        """
        rundir.rename(self.aside_dir / rundir.name)

    def wait_quiet(self) -> list[str]:
        """Wait for a quiet host before a run; a warning if it never got quiet."""
        if self.quiet_threshold >= 1.0:
            return []
        waited = wait_for_quiet(self.quiet_threshold, self.quiet_max_wait)
        if waited.waited > 2:
            self.progress(f"  waited {waited.waited:.0f}s for a quiet host")
        if not waited.quiet:
            busy = waited.busy * 100
            limit = self.quiet_threshold * 100
            return [
                f"host was {busy:.0f}% busy (of {NCPU} cores) before the run, over {limit:.0f}%"
            ]
        return []

    def cleanup(self, keep: bool) -> None:
        if keep:
            self.progress(f"run files kept in {self.workdir}")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)


def _run_number(name: str) -> int:
    """The number a run directory's name begins with (``007-accept-postroom``), else 0."""
    number = name.partition("-")[0]
    return int(number) if number.isdigit() else 0
