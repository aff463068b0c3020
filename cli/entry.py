"""The console script's first code: signal handlers before the CLI's imports.

Importing click and the commands takes tens of milliseconds; a Ctrl-C or SIGTERM in that time
printed a KeyboardInterrupt traceback (or killed the process without a word). While the CLI
loads, a signal ends the process at once with the line and exit code (130 for SIGINT, 143 for
SIGTERM) of a command stopped later; then Python's own handling is back, which the commands
rely on (a KeyboardInterrupt lets a file being written be cleaned up).
"""

from __future__ import annotations

import json
import os
import signal
import sys

_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}


def _stop_now(signum, _frame):
    code = 128 + signum
    message = f"interrupted by {_NAMES.get(signum, signum)}"
    if "--json" in sys.argv[1:]:  # the same JSON object on stdout as every other failure
        os.write(1, (json.dumps({"error": message, "exit_code": code}) + "\n").encode())
    else:
        os.write(2, f"{message}\n".encode())
    os._exit(code)  # nothing is open or written yet


def main(prog_name: str = "gengraph"):
    for signum in _NAMES:
        signal.signal(signum, _stop_now)
    from gengraph.cli.main import main as cli

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    cli(prog_name=prog_name)
