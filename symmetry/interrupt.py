"""Ctrl-C on the command lines: one line and exit code 130 at any moment, start-up and shutdown included.

Every ``python -m`` entry point calls :func:`install` as its first statement, before its heavy imports (torch
takes seconds to import), and runs its ``main`` through :func:`run`. A SIGINT then

- while the modules import (nothing has been written yet): prints ``interrupted`` and exits 130 at once;
- inside ``main``: raises ``KeyboardInterrupt`` as usual, so the command stops where it is safe to
  (``symmetry.runtime.cli_entry`` prints its one line; training writes its checkpoint first) and exits 130;
  except in a block of heavy imports that ``main`` runs after its options parse (:func:`importing`), which is
  treated as start-up;
- after that, or once ``main`` has returned (interpreter shutdown): exits 130 at once, with no traceback. Files
  are written atomically (``symmetry.io``), so stopping at once leaves no output half-written.

Standard library only, so that importing it costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator

EXIT_CODE = 130  # 128 + SIGINT, the shell's code for a command ended by Ctrl-C

_phase = "idle"  # idle (not installed), starting, running, stopping
_interrupted = False  # a Ctrl-C has already stopped main
_installed = False  # install() ran: this process is a command line, not a library caller


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
    global _phase, _installed
    if module_name != "__main__":
        return
    _phase, _installed = "starting", True
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
    if _installed and _interrupted:
        # Leave now rather than through interpreter shutdown, which would end the process with SIGINT (exit -2)
        # instead of 130 in two cases: a KeyboardInterrupt raised while main imported a module (torch, loaded
        # lazily since --help became fast) leaves CPython's "unhandled KeyboardInterrupt" flag set even though
        # main caught it (measured: 7 of 24 runs interrupted at 0.75-0.85 s); and shutdown puts SIGINT back to
        # its default action, so a further Ctrl-C in that window kills the process. Outputs are written
        # atomically (symmetry.io) and main has finished with them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed or broken stream: nothing more can be shown
                pass
        _exit(EXIT_CODE)
    return code


@contextlib.contextmanager
def importing() -> Iterator[None]:
    """A block of heavy imports inside ``main`` (modules loaded after the options parse): a Ctrl-C there ends the
    process at once with 130 and one line, as during start-up. Raised as a KeyboardInterrupt inside an import it
    would leave modules half-imported (numpy then refuses to load again: a traceback and exit 1 instead of 130)."""
    global _phase
    lazy = _phase == "running"
    if lazy:
        _phase = "starting"
    try:
        yield
    finally:
        if lazy and _phase == "starting":
            _phase = "running"


def _exit(code: int) -> None:
    """End the process at once with ``code`` (no interpreter shutdown); replaced in the tests."""
    os._exit(code)
