"""The ``symmetry_table`` experiment: tidy rows, known symmetry of synthetic families recovered, resumable cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import symmetry
from experiments import symmetry_table
from experiments.runner import Context, SkipCell, cell_key, run_experiment
from symmetry.settings import window_scale

ISOTROPIC = "synthetic:isotropic,size=40"
ANISOTROPIC = "synthetic:vonmises,kappa=16,size=40"  # mirror-symmetric (mu = 0), far from rot4-symmetric

SMALL = {
    "datasets": [ISOTROPIC, ANISOTROPIC, "div2k"],  # div2k is absent under the test's data root: skipped
    "splits": {"div2k": "valid"},
    "groups": ["rot4", "flip"],
    "meshes": [2.0, 1.0],
    "max_images": 16,
    "radius": 5.0,
    "windows": 32,
    "features": 128,
    "bandwidth": 2.5 / window_scale(5.0),  # standardised units: an L2 sigma of 2.5 at radius 5
    "permutations": 200,
    "bootstrap": 20,
    "interpolation": "bicubic",
    "channels": "gray",
    "alpha": 0.05,
    "curve_group": "rot4",
    "flip_groups": ["flip"],
    "seed": 0,
}
STATISTICS = {"rot4": {"rot90", "rot180", "rot270", "worst", "mean"}, "flip": {"flip", "worst", "mean"}}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    frame = run_experiment(
        "symmetry_table", out=out, config=SMALL, data_root=out, device="cpu", progress=False, log=lambda s: None
    )
    return out, frame


def worst(frame, dataset, group, mesh=1.0):
    hit = frame[(frame["dataset"] == dataset) & (frame["group"] == group) & (frame["mesh"] == mesh)]
    return hit[hit["statistic"] == "worst"].iloc[0]


def test_one_row_per_dataset_group_mesh_statistic(small_run):
    _, frame = small_run
    expected = {
        (d, g, h, s)
        for d in (ISOTROPIC, ANISOTROPIC)
        for g in SMALL["groups"]
        for h in SMALL["meshes"]
        for s in STATISTICS[g]
    }
    got = list(zip(frame["dataset"], frame["group"], frame["mesh"], frame["statistic"]))
    assert len(got) == len(set(got)) == len(expected)
    assert set(got) == expected  # div2k skipped: no rows
    numeric = ["symmetry_error", "null_q95", "p_value", "ci_low", "ci_high"]
    assert np.isfinite(frame[numeric].to_numpy(dtype=float)).all()
    summary = frame[frame["kind"] != "element"]
    assert np.isfinite(summary[[f"fit_{k}" for k in symmetry_table.FIT_COLUMNS]].to_numpy(dtype=float)).all()
    assert (frame["images"] == SMALL["max_images"]).all()
    assert ((frame["p_value"] > 0) & (frame["p_value"] <= 1)).all()
    assert (frame["ci_low"] <= frame["ci_high"]).all()


def test_worst_is_the_max_over_elements(small_run):
    _, frame = small_run
    for (_, _, _), sub in frame.groupby(["dataset", "group", "mesh"]):
        elements = sub[sub["kind"] == "element"]["symmetry_error"]
        stats = sub.set_index("statistic")["symmetry_error"]
        assert stats["worst"] == pytest.approx(elements.max(), rel=1e-12)
        assert stats["mean"] == pytest.approx(elements.mean(), rel=1e-9)


def test_isotropic_inside_null_anisotropic_outside(small_run):
    _, frame = small_run
    iso = worst(frame, ISOTROPIC, "rot4")
    aniso = worst(frame, ANISOTROPIC, "rot4")
    assert iso.p_value >= 0.05 and iso.symmetry_error < iso.null_q95
    assert aniso.p_value < 0.01 and aniso.symmetry_error > 3 * aniso.null_q95
    # the von Mises family (mu = 0) is mirror-symmetric by construction: inside the null for the flip
    assert worst(frame, ANISOTROPIC, "flip").p_value >= 0.05


def test_rerun_recomputes_nothing(small_run, monkeypatch):
    out, frame = small_run

    def fail(cell, ctx):
        raise AssertionError(f"cell {cell} was recomputed")

    def skip_only(cell, ctx):
        if cell["dataset"] != "div2k":
            fail(cell, ctx)
        raise SkipCell("absent")

    monkeypatch.setattr(symmetry_table, "run_cell", skip_only)
    again = run_experiment(
        "symmetry_table", out=out, config=SMALL, data_root=out, device="cpu", progress=False, log=lambda s: None
    )
    assert again.equals(frame)
    assert set(again["cell"]) <= {cell_key(c) for c in symmetry_table.cells(SMALL)}


def test_absent_file_dataset_is_skipped(tmp_path):

    cell = next(c for c in symmetry_table.cells({**SMALL, "datasets": ["rain100l"]}))
    ctx = Context(device=torch.device("cpu"), data_root=tmp_path)
    with pytest.raises(SkipCell, match="rain100l"):
        symmetry_table.run_cell(cell, ctx)


def test_figures_and_verdict(small_run):
    _, frame = small_run
    figs = symmetry_table.figures(frame, SMALL)
    assert set(figs) == {"heatmap", "mesh_rot4", "mesh_flips"}
    text = symmetry_table.verdict(frame, SMALL)
    assert "synthetic families as designed in 4/4" in text


@pytest.mark.parametrize(
    "spec, group, expected",
    [
        ("synthetic:isotropic", "dih8", True),
        ("synthetic:kfold,k=4,kappa=30,mu=22.5", "rot4", True),
        ("synthetic:kfold,k=4,kappa=30,mu=22.5", "rot8", False),
        ("synthetic:kfold,k=4,kappa=30,mu=22.5", "flip", False),
        ("synthetic:kfold,k=4", "dih4", True),
        ("synthetic:kfold,k=4", "dih8", False),
        ("synthetic:kfold,k=3", "rot6", True),  # orientations mod 180: period 60 degrees
        ("synthetic:kfold,k=3", "rot4", False),
        ("synthetic:vonmises,kappa=4", "rot2", True),  # atoms are half-turn symmetric
        ("synthetic:vonmises,kappa=4", "rot4", False),
        ("synthetic:vonmises,kappa=4", "dih2", True),
        ("synthetic:vonmises,kappa=4,mu=30", "flip", False),
        ("synthetic:vonmises,kappa=0", "rot16", True),
        ("synthetic:deformed,k=4", "rot4", None),  # no closed-form design
        ("skimage", "rot4", None),
    ],
)
def test_designed_symmetry(spec, group, expected):
    assert symmetry_table.designed_symmetric(spec, group) is expected


class _Measured(Exception):
    """Raised by the stand-in measurement: the arguments reached it, nothing needs computing."""


#: (config key, a different value, the measure_dataset argument it must reach, the value expected there)
PARAMETERS = [
    ("seed", 7, "seed", 7),
    ("meshes", [1.0], "mesh", [1.0]),
    ("radius", 6.0, "radius", 6.0),
    ("windows", 40, "windows", 40),
    ("features", 64, "features", 64),
    ("bandwidth", 0.3, "bandwidth", 0.3),
    ("permutations", 99, "permutations", 99),
    ("bootstrap", 10, "bootstrap", 10),
    ("interpolation", "bilinear", "interpolation", "bilinear"),
    ("channels", "rgb", "channels", "rgb"),
    ("alpha", 0.01, "alpha", 0.01),
    ("max_images", 3, "max_images", 3),
]


def _measured(config: dict, monkeypatch) -> tuple[dict, dict]:
    """The first cell of ``config`` and the arguments its run_cell passes to the measurement."""
    seen: dict = {}

    def measure(sources, group, **kwargs):
        seen.update(kwargs, group=group, first_image=sources[0].at_mesh(1.0))
        raise _Measured

    monkeypatch.setattr(symmetry, "measure_dataset", measure)
    cell = symmetry_table.cells(config)[0]
    with pytest.raises(_Measured):
        symmetry_table.run_cell(cell, Context(device=torch.device("cpu")))
    return cell, seen


@pytest.mark.parametrize("key, value, argument, expected", PARAMETERS)
def test_cells_hold_every_parameter(key, value, argument, expected, monkeypatch):
    """A cell's key identifies its result: each setting of the config changes the key and reaches the measurement.

    Fails if ``cells`` hard-codes a setting (say ``"seed": 0``) or ``run_cell`` ignores one (say ``windows=128``).
    """
    base = {**SMALL, "datasets": [ISOTROPIC]}
    cell, seen = _measured(base, monkeypatch)
    changed, seen_changed = _measured({**base, key: value}, monkeypatch)
    assert cell_key(changed) != cell_key(cell)
    assert seen[argument] != expected  # the base config does not already hold the new value
    assert seen_changed[argument] == expected
    assert seen_changed["group"] == base["groups"][0]


def test_cells_hold_the_split_and_the_dataset(monkeypatch):
    base = {**SMALL, "datasets": [ISOTROPIC]}
    cell, seen = _measured(base, monkeypatch)
    changed, seen_changed = _measured({**base, "splits": {"synthetic": "test"}}, monkeypatch)
    assert cell_key(changed) != cell_key(cell)
    assert (cell["split"], changed["split"]) == ("train", "test")
    assert not torch.equal(seen["first_image"], seen_changed["first_image"])  # the split reached the loader
    cells = symmetry_table.cells(SMALL)
    assert len(cells) == len(SMALL["datasets"]) * len(SMALL["groups"])
    assert len({cell_key(c) for c in cells}) == len(cells)
    assert {c["split"] for c in cells if c["dataset"] == "div2k"} == {"valid"}
