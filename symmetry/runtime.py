"""Device choice and the guard that turns user errors into one-line messages."""

from __future__ import annotations

import functools
import sys

import torch

from symmetry.errors import SymmetryError, UsageError


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` force one."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


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
