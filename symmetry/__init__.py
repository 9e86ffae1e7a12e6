"""Measure how symmetric image data is (theory.md, section 4).

``symmetry.measure_dataset(dataset, group, mesh=...)`` returns a :class:`~symmetry.report.SymmetryReport`
(also ``from symmetry.measure import measure``). Submodules: ``groups``, ``transforms``, ``decoders``,
``sources``, ``datasets``, ``locations``, ``download``, ``synthetic``, ``settings``, ``features``, ``estimators``,
``report``, ``checkpoint``, ``measurement``, ``cli`` and ``command`` (``python -m symmetry.measure``).
"""

__all__ = ["measure_dataset", "get_group", "is_subgroup", "Group", "GroupElement", "SymmetryReport", "Settings"]
__version__ = "0.1.0"

_LAZY = {
    "measure_dataset": "symmetry.measurement",
    "get_group": "symmetry.groups",
    "is_subgroup": "symmetry.groups",
    "Group": "symmetry.groups",
    "GroupElement": "symmetry.groups",
    "SymmetryReport": "symmetry.report",
    "Settings": "symmetry.settings",
}


def __getattr__(name: str):
    # Imported lazily: ``import symmetry`` imports nothing heavy, so that ``python -m symmetry.measure`` (which imports
    # this package first) reaches its Ctrl-C handler (symmetry.interrupt) before torch is imported.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'symmetry' has no attribute {name!r}")
