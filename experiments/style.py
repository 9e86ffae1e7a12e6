"""One plotting style for every figure, and atomic PNG + PDF output."""

from __future__ import annotations

import contextlib
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from symmetry.io import atomic_path

#: Colours by model kind and by dataset family, fixed so a kind looks the same in every figure.
MODEL_COLORS = {"plain": "#4C72B0", "equivariant": "#DD8452", "sa": "#55A868", "e2cnn": "#8172B3", "linear": "#937860"}
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=PALETTE),
    "lines.linewidth": 1.5,
    "lines.markersize": 4,
    "pdf.fonttype": 42,
}


def subplots(ncols: int = 1, nrows: int = 1, width: float = 3.4, height: float = 2.8, **kwargs):
    """A new ``Figure`` and its ``(nrows, ncols)`` axes in the project style; ``width``/``height`` per panel, inches.

    Applies ``STYLE`` to ``matplotlib.rcParams`` (artists read it when drawn). The figure is not registered
    with pyplot: the backend is left alone, nothing opens a window, and a notebook shows it once with
    ``display(fig)``.
    """
    matplotlib.rcParams.update(STYLE)
    fig = Figure(figsize=(width * ncols, height * nrows))
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)


FIGURE_SEED = 0
"""Seed of numpy's global generator while figures are drawn (seaborn's strip-plot jitter draws from it)."""


@contextlib.contextmanager
def seeded_global_rng(seed: int = FIGURE_SEED):
    """Draw with numpy's global generator seeded, and leave it as it was: the same figure twice is the same bytes."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved)


def save_figure(fig, out_dir: str | Path, name: str) -> list[Path]:
    """Write ``name.png`` and ``name.pdf`` atomically and reproducibly (no timestamps or version stamps)."""
    out_dir = Path(out_dir)
    paths = []
    for ext, metadata in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        path = out_dir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, metadata=metadata)
        paths.append(path)
    return paths
