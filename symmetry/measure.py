"""Measure a dataset's non-strict symmetry error eps_G(h) (theory.md, section 4).

Command line (``python -m symmetry.measure --help``; :mod:`symmetry.cli`)::

    python -m symmetry.measure                                   # the bundled photos, rot4, flip, flipud, dih4
    python -m symmetry.measure --dataset folder:PATH --group rot4,dih4 --mesh 2,1,0.5 --json out.json

Python (:func:`symmetry.measurement.measure_dataset`, also ``symmetry.measure_dataset``)::

    from symmetry.measure import measure
    report = measure("synthetic:kfold,k=4", "rot8", mesh=(2, 1, 0.5))
"""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import sys
from typing import TYPE_CHECKING

from symmetry.cli import build_parser, main

if TYPE_CHECKING:  # for type checkers; at run time ``measure`` is imported on first use (__getattr__ below)
    from symmetry.measurement import measure_dataset as measure

__all__ = ["measure", "main", "build_parser"]


def __getattr__(name: str):
    """``measure`` (:func:`symmetry.measurement.measure_dataset`), imported on first use."""
    if name == "measure":
        from symmetry.measurement import measure_dataset  # lazy: it imports torch, which --help needs not (issue 20)

        return measure_dataset
    raise AttributeError(f"module 'symmetry.measure' has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
