"""The two kinds of failure the library reports to its callers.

Library code raises these; the command layer (:mod:`medscope.app.cli`) turns
them into one line on stderr and an exit code. Nothing here knows about
argparse or the terminal.
"""
from __future__ import annotations


class UsageError(Exception):
    """Bad input (a value, a file, a run folder): one line saying what and what to do; exit code 2."""


class RunFailed(Exception):
    """Work that started but could not finish (e.g. the loss diverged): one line, exit code 1."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's kill, ``kill PID``): ends the work like Ctrl-C does, cleanup included."""
