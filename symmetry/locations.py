"""Where data lives: the one rule of every command line's ``--data-root`` and of every loader (:func:`data_root`).

Standard library only, so that a command line can show :data:`DATA_ROOT_HELP` in ``--help`` without importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "SYMMETRY_DATA"
CHECKOUT = Path(__file__).resolve().parents[1]
DEVELOPMENT_DATA = CHECKOUT.parent / "shared" / "data"
"""The development data beside a source checkout (``../shared/data``), used when it exists."""
CACHE_DATA = Path("~/.cache/symmetry")
DATA_ROOT_HELP = (
    "where datasets live (default: $SYMMETRY_DATA, else ../shared/data beside a checkout, else ~/.cache/symmetry)"
)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: the one rule of every command line's ``--data-root`` and of every loader.

    1. ``root`` when given (``--data-root``);
    2. else ``$SYMMETRY_DATA``;
    3. else :data:`DEVELOPMENT_DATA`, ``../shared/data`` beside a source checkout (a folder holding
       ``pyproject.toml``), when that folder exists;
    4. else ``~/.cache/symmetry`` (where ``--download`` puts DIV2K).
    """
    if root not in (None, ""):
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    if (CHECKOUT / "pyproject.toml").is_file() and DEVELOPMENT_DATA.is_dir():
        return DEVELOPMENT_DATA
    return CACHE_DATA.expanduser()
