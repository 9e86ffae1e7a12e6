"""Measure how symmetric image data is (theory.md, section 4).

``symmetry.measure_dataset(dataset, group, mesh=...)`` returns a :class:`~symmetry.report.SymmetryReport`
(also ``from symmetry.measure import measure``). Submodules: ``groups``, ``transforms``, ``data``,
``synthetic``, ``settings``, ``features``, ``estimators``, ``report``, ``checkpoint``, ``measurement``,
``cli`` (``python -m symmetry.measure``).
"""

from symmetry.groups import Group, GroupElement, get_group, is_subgroup
from symmetry.report import SymmetryReport
from symmetry.settings import Settings

__all__ = ["measure_dataset", "get_group", "is_subgroup", "Group", "GroupElement", "SymmetryReport", "Settings"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "measure_dataset":
        # lazy: every module imports this package, and `python -m symmetry.measure --help` must stay fast
        from symmetry.measurement import measure_dataset

        return measure_dataset
    raise AttributeError(f"module 'symmetry' has no attribute {name!r}")
