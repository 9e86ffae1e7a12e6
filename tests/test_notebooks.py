"""Every notebook executes without error at the quick scale, from the committed results (no recomputation)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ["01_dataset_symmetry", "02_bound_verification", "03_bias_variance", "04_sample_adaptive"]


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.csv"))}


@pytest.mark.slow  # a kernel per notebook, 7+ s of CPU each (make test-slow)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = ROOT / "notebooks" / f"{name}.ipynb"
    assert path.exists(), f"{path} is missing"
    before = _digest(ROOT / "results")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()  # raises CellExecutionError on any error
    assert _digest(ROOT / "results") == before, "the notebook recomputed or changed committed results"
