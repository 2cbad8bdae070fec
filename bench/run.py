"""Run every benchmark and print the table: ``python bench/run.py [--quick] [--runs N]``.

See bench/README.md. Works from any directory; also ``python -m bench``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.cli import main

    sys.exit(main())
