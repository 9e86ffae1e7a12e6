"""The optimal (LMMSE) restoration operator of synthetic fields and the ``bound_lmmse`` experiment (Theorem 3.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import iv

from experiments.runner import load_config, run_experiment
from symmetry.groups import get_group
from symmetry.synthetic import make_fields
from symmetry.transforms import transform_image
from theory.optimal import (
    FieldLaw,
    Restoration,
    covariance_symmetry_error,
    disk_convolution,
    envelope_bound,
    fit_bound,
    fit_linear_convolution,
    lattice_covariance,
    lattice_disk,
    lmmse_operator,
    optimal_equivariance_error,
    optimal_operator,
    symmetry_errors,
    transform_matrix,
    wiener_convolution,
    window_covariance,
)

SMALL = {"long": 3.0, "short": 1.0}


def _bessel_covariance(law: FieldLaw, d: np.ndarray, terms: int = 60) -> np.ndarray:
    """``C(d)`` of a von Mises law from the Bessel series of ``E_theta exp(-d' S_theta^-1 d / 4)``."""
    r2 = (d**2).sum(-1)
    phi = np.arctan2(d[..., 1], d[..., 0])
    a = (1 / law.long**2 + 1 / law.short**2) / 2
    z = r2 * (1 / law.short**2 - 1 / law.long**2) / 8  # exp(z cos 2(phi - theta)), z >= 0
    series = iv(0, z)
    ratio = lambda n: iv(n, law.kappa) / iv(0, law.kappa) if law.kappa > 0 else 0.0  # noqa: E731
    for n in range(1, terms):
        series = series + 2 * iv(n, z) * np.cos(2 * n * (phi - math.radians(law.mu))) * ratio(2 * n)
    pref = law.intensity * 7 / 12 * math.pi * law.long * law.short
    return pref * np.exp(-r2 * a / 4) * series


@pytest.mark.parametrize("kappa", [0.0, 0.7, 3.0])
def test_covariance_quadrature_matches_bessel_series(kappa):
    law = FieldLaw(family="vonmises", kappa=kappa, mu=20.0, **SMALL)
    d = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5], [2.0, -1.0], [-3.0, 2.5], [4.0, 4.0]], dtype=torch.float64)
    exact = _bessel_covariance(law, d.numpy())
    np.testing.assert_allclose(law.covariance(d).numpy(), exact, rtol=1e-10, atol=1e-14)
    assert law.covariance(d[:1]).item() == pytest.approx(law.variance, rel=1e-12)


def test_covariance_agrees_with_monte_carlo_over_fields():
    """The closed form against the empirical covariance of drawn fields, within 4 standard errors."""
    law = FieldLaw(family="vonmises", kappa=1.5, atoms=60, size=24.0, **SMALL)
    fields = make_fields("vonmises", n=1500, seed=3, **law.synthetic_params())
    offsets = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]], dtype=torch.float64)
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    prods = torch.stack([f.evaluate(x0)[0] * f.evaluate(offsets)[0] for f in fields])  # (n, offsets)
    mean, se = prods.mean(0), prods.std(0) / math.sqrt(len(fields))
    exact = law.covariance(offsets)
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)


def test_window_covariance_is_symmetric_positive_semidefinite():
    cov = window_covariance(FieldLaw(family="kfold", kappa=4.0, mu=20.0, **SMALL), mesh=0.5, radius=2.5)
    assert cov.shape[0] == len(lattice_disk(2.5, 0.5))
    assert torch.equal(cov, cov.T)
    eig = torch.linalg.eigvalsh(cov)
    assert eig.min() >= -1e-12 * eig.max()
    spec = window_covariance("synthetic:kfold,kappa=4,mu=20,long=3,short=1", mesh=0.5, radius=2.5)
    assert torch.equal(spec, cov)


def test_lmmse_operator_matches_brute_force_and_is_optimal():
    law = FieldLaw(family="vonmises", kappa=2.0, **SMALL)
    idx_in, idx_out = lattice_disk(2.0, 0.5), lattice_disk(1.0, 0.5)
    c_yy = lattice_covariance(law, idx_in, idx_in, 0.5, beta=2 * 0.7**2)  # blurred observation
    c_xy = lattice_covariance(law, idx_out, idx_in, 0.5, beta=0.7**2)
    sigma = 0.3 * math.sqrt(law.variance)
    w = lmmse_operator(c_xy, c_yy, sigma)
    k = c_yy + sigma**2 * torch.eye(len(idx_in), dtype=torch.float64)
    torch.testing.assert_close(w, c_xy @ torch.linalg.inv(k), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(w @ k, c_xy, rtol=1e-9, atol=1e-12)  # orthogonality principle
    c_xx = lattice_covariance(law, idx_out, idx_out, 0.5)

    def mse(op):
        return torch.trace(c_xx - op @ c_xy.T - c_xy @ op.T + op @ k @ op.T)

    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        assert mse(w + 1e-3 * torch.randn(w.shape, generator=gen, dtype=torch.float64)) > mse(w)


def test_transform_matrix_is_the_projects_transform():
    src, dst, m = lattice_disk(9, 1.0), lattice_disk(4, 1.0), 9
    img = torch.randn(1, 2 * m + 1, 2 * m + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    values = img[0, m - src[:, 1], m + src[:, 0]]
    for element in get_group("dih8"):
        t = transform_matrix(element, src, dst)
        ref = transform_image(img, element)[0][0, m - dst[:, 1], m + dst[:, 0]]
        torch.testing.assert_close(t @ values, ref, rtol=0, atol=1e-12)
        if element.is_grid_exact:
            assert set(t.unique().tolist()) <= {0.0, 1.0}  # a permutation


def test_optimal_operator_of_isotropic_law_is_exactly_equivariant_to_grid_elements():
    problem = Restoration(FieldLaw(family="isotropic", **SMALL), 0.5, radius=3.0, eval_radius=1.0, noise=0.5)
    rows = {r["element"]: r["equivariance_error"] for r in optimal_equivariance_error(problem, "dih8")}
    group = get_group("dih8")
    for element in group.non_identity:
        if element.is_grid_exact:
            assert rows[element.name] < 1e-26, (element.name, rows[element.name])
        else:
            assert rows[element.name] > 1e-8  # interpolation makes 45-degree rotations inexact
    # every atom field is half-turn symmetric: the half turn stays exact for an anisotropic law too
    aniso = Restoration(FieldLaw(family="vonmises", kappa=3.0, **SMALL), 0.5, radius=3.0, eval_radius=1.0)
    rows = {r["element"]: r["equivariance_error"] for r in optimal_equivariance_error(aniso, "rot8")}
    assert rows["rot180"] < 1e-26 and rows["rot90"] > 1e-4
    assert rows["rot225"] == pytest.approx(rows["rot45"], rel=1e-9)


def test_error_parts_add_up_and_mse_is_consistent():
    problem = Restoration(FieldLaw(family="vonmises", kappa=1.0, **SMALL), 0.7, radius=3.0, eval_radius=1.0, blur=0.5)
    for row in optimal_equivariance_error(problem, "rot8"):
        assert row["error_signal"] + row["error_noise"] == pytest.approx(row["equivariance_error"], rel=1e-12)
    op = optimal_operator(problem)
    assert 0 < op.mse < 1


def test_covariance_symmetry_error_is_zero_exactly_for_the_datas_symmetries():
    iso = symmetry_errors(FieldLaw(family="isotropic", **SMALL), "dih8", radius=4.0)
    assert iso["worst"] < 1e-20
    kfold = FieldLaw(family="kfold", k=4, kappa=4.0, mu=20.0, **SMALL)
    rot90, rot45 = get_group("rot8").element("rot90"), get_group("rot8").element("rot45")
    assert covariance_symmetry_error(kfold, rot90, 4.0) < 1e-20
    assert covariance_symmetry_error(kfold, rot45, 4.0) > 1e-3
    eps = [symmetry_errors(FieldLaw(family="vonmises", kappa=k, **SMALL), "rot8", 4.0)["worst"] for k in (0.5, 1, 2)]
    assert eps[0] < eps[1] < eps[2]


def test_error_grows_linearly_in_eps_at_fixed_mesh():
    """Theorem 3.6 at fixed h: the error of the optimum grows (at most) linearly in eps_cov."""
    eps, err = [], []
    for kappa in (0.0, 0.5, 1.0, 1.5):
        law = FieldLaw(family="vonmises", kappa=kappa, **SMALL)
        rows = optimal_equivariance_error(Restoration(law, 1.0, radius=3.0, eval_radius=1.0), "rot8")
        err.append(max(r["equivariance_error"] for r in rows))
        eps.append(symmetry_errors(law, "rot8", 3.0)["worst"])
    coef = np.polyfit(eps, err, 1)
    resid = np.asarray(err) - np.polyval(coef, eps)
    assert coef[0] > 0
    assert 1 - (resid**2).sum() / ((np.asarray(err) - np.mean(err)) ** 2).sum() > 0.98


def test_wiener_convolution_is_the_centre_row_of_the_window_operator():
    problem = Restoration(FieldLaw(family="vonmises", kappa=1.0, **SMALL), 0.5, radius=2.0, eval_radius=0.0)
    conv = wiener_convolution(problem, kernel_radius=2.0)
    op = optimal_operator(problem)
    centre = op.operator[op.index_out.abs().sum(1) == 0][0]
    m = conv.weight.shape[-1] // 2
    kernel = conv.weight[0, 0, m - op.index_in[:, 1], m + op.index_in[:, 0]]
    torch.testing.assert_close(kernel, centre, rtol=1e-12, atol=1e-14)


def test_least_squares_convolution_recovers_a_known_kernel():
    index = lattice_disk(2.0, 1.0)
    gen = torch.Generator().manual_seed(0)
    true = disk_convolution(torch.randn(len(index), generator=gen, dtype=torch.float64), index)
    x = torch.randn(3, 1, 24, 24, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = true(x)
    learned = fit_linear_convolution(x, y, index, samples=500, generator=gen)
    torch.testing.assert_close(learned.weight, true.weight, rtol=1e-9, atol=1e-10)


def test_bound_fits_recover_exact_constants():
    h = np.array([2.0, 1.0, 0.5, 2.0, 1.0, 0.5])
    eps = np.array([0.0, 0.0, 0.0, 0.1, 0.1, 0.1])
    err = 0.01 * h**2 + 0.3 * eps
    assert fit_bound(h, eps, err) == pytest.approx((0.01, 0.3), rel=1e-9)
    a, b = envelope_bound(h, eps, err * np.array([1, 1.2, 1, 1, 1, 1.1]))
    assert np.all(a * h**2 + b * eps >= err * np.array([1, 1.2, 1, 1, 1, 1.1]) * (1 - 1e-9))


def _small_config(**changes) -> dict:
    cfg = load_config("bound_lmmse", "quick")
    cfg.update(kappas=[0.0, 2.0], mmd_images=0, trained_kappas=[])
    cfg.update(changes)
    return cfg


def _run(tmp_path, cfg):
    from experiments import bound_lmmse as bound

    frame = run_experiment("bound_lmmse", "quick", out=tmp_path, config=cfg, progress=False, log=lambda s: None)
    return frame, bound.analyse(frame, cfg)


def test_quick_bound_run_small(tmp_path):
    """Four meshes over a decade: the error at eps = 0 falls at least like h^2, and floors at b eps for eps > 0."""
    cfg = _small_config(meshes=[2.0, 1.0, 0.5, 0.25], radius=4.0, eval_radius=1.0)
    frame, res = _run(tmp_path, cfg)
    s = res["summary"]
    iso, aniso = s[s["kappa"] == 0].sort_values("mesh"), s[s["kappa"] == 2].sort_values("mesh")
    assert res["slope"] > 2 - 0.3
    assert np.all(np.diff(iso["equivariance_error"].to_numpy()) > 0)  # decreasing as h falls
    fine = aniso[aniso["mesh"] <= 1.0]["equivariance_error"]
    assert fine.max() / fine.min() < 1.1  # the floor b*eps
    assert (aniso["equivariance_error"].to_numpy() > iso["equivariance_error"].to_numpy()).all()
    rows = frame[(frame["kind"] == "optimal") & (frame["kappa"] == 0)]
    assert rows[rows["is_grid_exact"]]["equivariance_error"].max() < 1e-25


@pytest.mark.slow  # 48 s; test_quick_bound_run_small checks the slope on four meshes in 8 s (make test-slow)
def test_quick_bound_run_slope_is_two(tmp_path):
    """The quick scale's decade of meshes: slope within 0.3 of 2 at eps = 0; the envelope bounds held-out points."""
    cfg = _small_config()
    _, res = _run(tmp_path, cfg)
    assert abs(res["slope"] - 2) < 0.3, res["slope"]
    assert res["held_bounded_envelope"] >= 0.75
