"""Ctrl-C on the command lines: one line and exit code 130 at any moment, start-up and shutdown included.

Every ``python -m`` entry point calls :func:`install` as its first statement, before its heavy imports (torch
takes seconds to import), and runs its ``main`` through :func:`run`. A SIGINT then

- while the modules import (nothing has been written yet): prints ``interrupted`` and exits 130 at once;
- inside ``main``: raises ``KeyboardInterrupt`` as usual, so the command stops where it is safe to
  (``symmetry.runtime.cli_entry`` prints its one line; training writes its checkpoint first) and exits 130;
- after that, or once ``main`` has returned (interpreter shutdown): exits 130 at once, with no traceback. Files
  are written atomically (``symmetry.io``), so stopping at once leaves no output half-written.

Standard library only, so that importing it costs nothing.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

EXIT_CODE = 130  # 128 + SIGINT, the shell's code for a command ended by Ctrl-C

_phase = "idle"  # idle (not installed), starting, running, stopping
_interrupted = False  # a Ctrl-C has already stopped main


def _handler(signum, frame) -> None:
    global _phase, _interrupted
    if _phase == "running":
        _phase, _interrupted = "stopping", True  # a further Ctrl-C leaves at once
        raise KeyboardInterrupt
    _leave("interrupted again; stopped at once" if _interrupted else "interrupted")


def _leave(message: str) -> None:
    """Flush what can be flushed, print ``message`` and exit with :data:`EXIT_CODE` without unwinding."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a stream busy in the interrupted frame (reentrant call) or closed
            pass
    try:
        os.write(2, (message + "\n").encode())
    except OSError:
        pass
    os._exit(EXIT_CODE)


def install(module_name: str) -> None:
    """From a module's top, first: ``install(__name__)``; does nothing unless the module runs as ``__main__``."""
    global _phase
    if module_name != "__main__":
        return
    _phase = "starting"
    signal.signal(signal.SIGINT, _handler)


def install_for_package() -> None:
    """From a package's ``__init__``, first: install the handler when the package is being imported because
    ``python -m package.module`` is starting (Python sets ``sys.argv[0]`` to ``"-m"`` while it locates the
    module), so a Ctrl-C while the package's own imports run ends quietly too; a library import does nothing."""
    if sys.argv[:1] == ["-m"]:
        install("__main__")


def run(main: Callable[[], int]) -> int:
    """``main()``'s exit code, 130 when Ctrl-C ended it; a Ctrl-C from here on exits 130 at once."""
    global _phase, _interrupted
    installed = _phase != "idle"  # install() ran: this process is a command line, not a library caller
    _phase = "running"
    try:
        try:
            code = main()
        except KeyboardInterrupt:  # a main that does not catch it itself
            _phase, _interrupted = "stopping", True
            print("interrupted", file=sys.stderr)
            code = EXIT_CODE
    except KeyboardInterrupt:  # a second Ctrl-C while reporting the first
        code = EXIT_CODE
    _interrupted = _interrupted or code == EXIT_CODE
    _phase = "stopping"
    if installed and _interrupted:
        # Interpreter shutdown puts SIGINT back to its default action before the process ends, so a further
        # Ctrl-C in that window would kill it (exit -2) instead of letting it leave with 130: ignore it from here.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return code
