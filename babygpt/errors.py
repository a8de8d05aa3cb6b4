"""
A mistake the user can fix, and how every script reports one: one line on stderr that names the problem and
the fix, a non-zero exit, no traceback (BABYGPT_DEBUG=1 shows it). No torch here: the data scripts use it too.
"""

import os
import signal
import sys
import threading


class UserError(Exception):
    """A problem the user can fix (a bad setting, a missing file, a refused input); the message says how."""


def first_line(error, limit=200):
    """An exception's message cut to its first line, for a one-line error that names the cause."""
    return (str(error).strip().splitlines() or [""])[0][:limit]


def run_main(main, interrupted="interrupted"):
    """Call main(); a UserError becomes one line on stderr and exit status 1, Ctrl-C the line `interrupted`
    and 130. Set BABYGPT_DEBUG=1 to see the full traceback instead."""
    try:
        main()
    except UserError as e:
        if os.environ.get("BABYGPT_DEBUG"):
            raise
        if int(os.environ.get("RANK", "0")) != 0:
            # under torchrun every rank meets the same refusal (same settings, same files): rank 0 prints it
            # and fails, so torchrun reports one failure instead of one per process
            _exit_quietly(0)
        print(f"error: {e}", file=sys.stderr)
        _exit_quietly(1)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        _exit_quietly(130)
    except SystemExit as e:  # train.py's 130 after a clean stop, --help's 0
        _exit_quietly(e.code)
    _exit_quietly(0)


def _exit_quietly(code):
    """sys.exit(code), deaf to Ctrl-C from here on: Python's shutdown puts back the default action for
    SIGINT, so a Ctrl-C while it tears torch down would kill the process (status -2, not code)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)
