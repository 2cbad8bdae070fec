import sys

if sys.argv[1:] == ["serve", "--worker"]:
    # An accept worker, started by its primary (workers.py): straight to the server,
    # without the command line's modules, which every worker would carry for nothing.
    from postroom.runtime import run_worker

    sys.exit(run_worker())

from postroom.cli import main

main()
