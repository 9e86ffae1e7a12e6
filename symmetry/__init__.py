"""Measure how symmetric image data is (theory.md, section 4).

``symmetry.measure(dataset, group, mesh=...)`` returns a :class:`~symmetry.report.SymmetryReport`.
Submodules: ``groups``, ``transforms``, ``data``, ``synthetic``, ``estimators``, ``report``, ``measure``.
"""

from symmetry.groups import Group, GroupElement, get_group, is_subgroup
from symmetry.report import SymmetryReport

__all__ = ["measure", "get_group", "is_subgroup", "Group", "GroupElement", "SymmetryReport"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported lazily so that `python -m symmetry.measure` does not import the module twice.
    # symmetry.measure is a callable module: symmetry.measure(...) runs symmetry.measure.measure(...).
    if name == "measure":
        import importlib

        return importlib.import_module("symmetry.measure")
    raise AttributeError(f"module 'symmetry' has no attribute {name!r}")
