"""Per-image symmetry error and best alignment (symmetry.alignment; theory.md, section 4, last point)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from symmetry.alignment import (
    COLUMNS,
    AlignmentSettings,
    angle_period,
    autocovariance,
    best_alignment,
    canonical,
    circular_correlation,
    deformation,
    main,
    make_aligner,
    match_to,
)
from symmetry.groups import get_group
from symmetry.sources import ImageSource
from symmetry.synthetic import make_fields

FIELD = dict(size=96, atoms=150, long=2.5, short=0.7)  # dense, small atoms: a single image is nearly symmetric
SETTINGS = AlignmentSettings(radius=4.0)


@pytest.fixture(scope="module")
def deformed():
    """rot4-symmetric motif fields through a known R(theta) diag(cx, cy), and their best alignments."""
    fields = make_fields("deformed", n=4, stretch=0.6, **FIELD)
    return fields, best_alignment(fields, "rot4", 1.0, settings=SETTINGS, device="cpu")


def test_deformation_is_sa_conv_parameterisation():
    from analysis.models import inverse_deformation

    params = torch.tensor([[0.3, 1.4, 0.8], [-0.7, 0.6, 1.9]], dtype=torch.float64)
    d = deformation(params[:, 0], params[:, 1], params[:, 2])
    eye = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    torch.testing.assert_close(inverse_deformation(params) @ d, eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(d[0, :, 0], torch.tensor([math.cos(0.3), math.sin(0.3)], dtype=torch.float64) * 1.4)


def test_recovers_known_stretch_modulo_quarter_turn(deformed):
    fields, frame = deformed
    assert list(frame.columns) == list(COLUMNS) and len(frame) == len(fields)
    truth_theta = np.array([f.meta["theta"] for f in fields])
    truth_ratio = np.array([f.meta["log_ratio"] for f in fields])
    err, ratio = match_to(frame["theta0"], frame["log_ratio"], truth_theta, math.pi / 2)
    assert np.all(np.abs(np.degrees(err)) < 12), np.degrees(err)
    assert np.all(np.abs(ratio - truth_ratio) < 0.25), ratio - truth_ratio
    assert np.all((frame["theta0"] >= 0) & (frame["theta0"] < math.pi / 2))
    np.testing.assert_allclose(frame["cx"] * frame["cy"], 1.0, rtol=1e-12)
    # aligning removes most of the error: the aligned image is (nearly) rot4-symmetric
    assert np.all(frame["aligned_error"] < 0.5 * frame["self_symmetry_error"])


def test_isotropic_image_needs_no_stretch():
    """Its (small, finite-image) asymmetry is not a misalignment: near-identity stretch, little error removed."""
    frame = best_alignment(make_fields("isotropic", n=3, **FIELD), "rot4", settings=SETTINGS, device="cpu")
    assert np.all(np.abs(frame["log_ratio"]) < 0.3), frame["log_ratio"]
    assert np.all(frame["aligned_error"] > 0.4 * frame["self_symmetry_error"])
    assert np.all(frame["self_symmetry_error"] < 0.1)


@pytest.mark.parametrize("distance", ["covariance", "mmd"])
def test_quarter_turn_of_theta_swaps_the_axes_exactly(distance):
    """``R(t + pi/2) diag(cx, cy) = R(t) diag(cy, cx) R(pi/2)``, ``R(pi/2)`` in rot4: the same error on the grid."""
    src = make_fields("deformed", n=1, size=64, atoms=150, long=2.5, short=0.7)[0]
    settings = AlignmentSettings(radius=3.0, windows=24, features=64, distance=distance)
    aligner = make_aligner(src, get_group("rot4"), 1.0, settings, bandwidth=1.0 if distance == "mmd" else None)
    theta = torch.tensor([0.37, 0.37 + math.pi / 2, 1.1, 1.1 + math.pi / 2], dtype=torch.float64)
    cx = torch.tensor([1.3, 1 / 1.3, 1.0, 1.0], dtype=torch.float64)
    errors = aligner.errors(deformation(theta, cx, 1 / cx))
    torch.testing.assert_close(errors[1], errors[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(errors[3], errors[2], rtol=1e-9, atol=1e-12)
    assert float(errors[0, 1:].abs().max()) > 0
    assert torch.all(errors[:, 0] == 0)  # the identity element


def test_covariance_error_is_zero_for_an_exactly_symmetric_array():
    """A rot4-symmetric square array has a rot4-symmetric autocovariance: self-symmetry error 0 at D = I."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 41, 41, generator=g, dtype=torch.float64)
    sym = sum(torch.rot90(base, k, (-2, -1)) for k in range(4))
    aligner = make_aligner(ImageSource("sym", array=sym), get_group("rot4"), 1.0, AlignmentSettings(radius=3.0))
    err = aligner.errors(deformation([0.0], [1.0], [1.0]))[0]
    assert float(err.abs().max()) < 1e-20
    asym = make_aligner(ImageSource("raw", array=base), get_group("rot4"), 1.0, AlignmentSettings(radius=3.0))
    err = asym.errors(deformation([0.0], [1.0], [1.0]))[0]
    assert float(err[2]) < 1e-20 < float(err[1])  # C(-tau) = C(tau): the half turn is invisible to second moments


def test_autocovariance_matches_direct_sum():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 11, generator=g, dtype=torch.float64)
    cov = autocovariance(x, 3)[0]
    xc = x - x.mean(dim=(-2, -1), keepdim=True)
    for dr, dc in [(0, 0), (1, 2), (-3, 1), (2, -3)]:
        a = xc[:, max(0, -dr) : 9 - max(0, dr), max(0, -dc) : 11 - max(0, dc)]
        b = xc[:, max(0, dr) : 9 + min(0, dr), max(0, dc) : 11 + min(0, dc)]
        direct = (a * b).sum() / a[0].numel()
        torch.testing.assert_close(cov[3 + dr, 3 + dc], direct)


def test_equivalence_helpers():
    theta, ratio = canonical([0.2, 0.2 + math.pi / 2, 0.2 + math.pi, -0.1], [0.5, 0.5, 0.5, 0.3])
    np.testing.assert_allclose(theta, [0.2, 0.2, 0.2, math.pi / 2 - 0.1])
    np.testing.assert_allclose(ratio, [0.5, -0.5, 0.5, -0.3])
    err, matched = match_to([math.pi / 2 - 0.05], [0.4], [0.02])
    np.testing.assert_allclose(err, [-0.07])
    np.testing.assert_allclose(matched, [-0.4])
    a = np.random.default_rng(0).uniform(0, math.pi / 2, 20)
    assert circular_correlation(a, a + math.pi / 2 * 3 + 0.1, math.pi / 2) == pytest.approx(1.0)
    assert circular_correlation(a, -a, math.pi / 2) == pytest.approx(-1.0)
    assert angle_period(get_group("rot4")) == math.pi / 2 and angle_period(get_group("rot2")) == math.pi


def test_cli_writes_csv_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "align.csv"
    spec = "synthetic:deformed,n=2,size=48,atoms=150,long=2.5,short=0.7"
    assert main(["--dataset", spec, "--group", "rot4", "--radius", "3", "--csv", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 2
    assert main(["--dataset", spec, "--group", "rot5x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown group")
    assert main(["--dataset", spec, "--csv", str(tmp_path)]) == 2  # a directory: refused before any work
    captured = capsys.readouterr()
    assert "is a directory" in captured.err and captured.out == ""
