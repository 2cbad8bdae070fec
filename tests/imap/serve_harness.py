"""``python -m tests.imap.serve_harness DATA_DIR``: an IMAP listener (plaintext login on
loopback) over DATA_DIR's Maildir in a process of its own, so a test can watch its
memory. Prints the port, serves until standard input closes."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.imap.harness import ImapHarness


def main() -> None:
    harness = ImapHarness(Path(sys.argv[1]), plaintext_login=True).start()
    print(harness.port, flush=True)
    sys.stdin.read()
    harness.stop()


if __name__ == "__main__":
    main()
