"""The scale-profile figure: eps and its null band per group, and with --frechet the W2^2 bracket's values."""

from __future__ import annotations

import numpy as np
import torch

import symmetry
from symmetry.sources import ImageSource

OPTIONS = dict(mesh=1.0, windows=16, features=64, permutations=99, bootstrap=0, device="cpu")


def _sources():
    rng = np.random.default_rng(0)
    return [ImageSource(f"i{i}", array=torch.from_numpy(rng.random((1, 40, 40)))) for i in range(3)]


def test_frechet_adds_a_row_with_the_w2_bracket_values():
    report = symmetry.measure_dataset(_sources(), "flipud", radius="3,5", frechet=True, **OPTIONS)
    fig = report.figure()
    assert len(fig.axes) == 4
    worst = report.summary("worst").sort_values("radius")
    lines = fig.axes[2].get_lines()  # lower row, against radius: the lower bound, then the upper bound
    assert np.allclose(lines[0].get_ydata(), worst["frechet_distance"])
    assert np.allclose(lines[1].get_ydata(), worst["w2_upper"])
    assert (worst["w2_upper"] >= worst["frechet_distance"]).all()


def test_without_frechet_one_row_of_eps():
    report = symmetry.measure_dataset(_sources(), "flip,flipud", radius="3,5", **OPTIONS)
    fig = report.figure()
    assert len(fig.axes) == 2
    eps = fig.axes[0].get_lines()[:2]  # one curve per group (the axhline comes after them)
    expected = [report.summary("worst", g).sort_values("radius")["symmetry_error"] for g in ("flip", "flipud")]
    assert sorted(tuple(np.round(line.get_ydata(), 12)) for line in eps) == sorted(
        tuple(np.round(e.to_numpy(), 12)) for e in expected
    )
