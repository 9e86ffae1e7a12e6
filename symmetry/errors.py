"""Errors that the command-line tools turn into a one-line message and an exit code."""

from __future__ import annotations


class SymmetryError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1


class UsageError(SymmetryError):
    """Bad options or arguments (exit code 2)."""

    exit_code = 2


class DataError(SymmetryError):
    """Missing, unreadable or unsuitable data (exit code 1)."""

    exit_code = 1
