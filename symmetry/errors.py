"""Errors that the command-line tools turn into a one-line message and an exit code, and the guard that does it.

Standard library only, so that a command line can parse its options and print ``--help`` before it imports torch.
"""

from __future__ import annotations

import argparse
import functools
import sys


class SymmetryError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 1


class UsageError(SymmetryError):
    """Bad options or arguments (exit code 2)."""

    exit_code = 2


class DataError(SymmetryError):
    """Missing, unreadable or unsuitable data (exit code 1)."""

    exit_code = 1


class CliParser(argparse.ArgumentParser):
    """``argparse`` parser whose errors are one-line :class:`UsageError` messages (exit code 2, no usage block)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def cli_entry(main):
    """Wrap a ``main(argv) -> int`` so known errors print ``error: ...`` and exit with their code."""

    @functools.wraps(main)
    def wrapper(argv=None) -> int:
        try:
            return main(argv)
        except SymmetryError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
        except KeyboardInterrupt:
            print("interrupted; outputs written so far are complete and kept", file=sys.stderr)
            return 130

    return wrapper
