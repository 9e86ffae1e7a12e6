"""Theorem 3.6 in its own setting: ``theory.deconvolution``, ``theory.bumps``, ``theory.continuum`` and the ``bound``
experiment, with a broken variant for every check the experiment makes."""

from __future__ import annotations

import functools
import math

import numpy as np
import pandas as pd
import pytest

from experiments import bound_theorem as bound
from experiments.runner import load_config
from symmetry.groups import GroupElement, get_group
from symmetry.transforms import rotation_matrix
from theory import bumps
from theory import continuum as ct
from theory import deconvolution as dc


def _tiny_cell(**changes) -> dict:
    cfg = load_config("bound", "quick")
    cfg.update(images=2, meshes=[0.4], ts=[0.0, 1.0], groups=["rot4", "rot8", "so2:3"], families=["gaussian"])
    cfg["measure"] = {**cfg["measure"], "windows": 0}
    cfg.update(changes)
    return bound.cells(cfg)[0]


def _turn(angle: float) -> GroupElement:
    return GroupElement(f"rot{angle:g}rad", tuple(tuple(row) for row in rotation_matrix(angle).tolist()))


def _atom(c=2.0, centre=(0.3, -0.2), long=0.4, short=0.4, angle=0.0):
    return dc.AtomImage.atoms([c], [centre], long, short, [angle])


def test_blur_and_inner_products_are_exact():
    """``k * r`` and ``<r, r'>`` in closed form agree with fine Riemann sums (spectrally accurate for Gaussians)."""
    r = _atom(1.5, (0.2, 0.1), 0.4, 0.2, 0.7) + _atom(-0.8, (-0.3, 0.2), 0.3, 0.25, -0.2)
    mesh = dc.Mesh(0.02, 3.0)
    y = mesh.sample(r)
    assert r.inner(r) == pytest.approx(dc.norm2(y, mesh.h), rel=1e-10)
    sigma = 0.15
    k = np.exp(-(mesh.points**2).sum(-1) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    from scipy.signal import fftconvolve

    conv = fftconvolve(y, k, mode="same") * mesh.h**2
    inner = mesh.mask & ((mesh.points**2).sum(-1) < 1.5**2)
    np.testing.assert_allclose(conv[inner], mesh.sample(r.blurred(sigma))[inner], atol=1e-10)


def test_quarter_turn_sampling_is_a_permutation():
    """Exact sampling of ``pi_A r`` for quarter turns and flips equals the index permutation, bit for bit."""
    r = _atom(1.0, (0.5, 0.2), 0.5, 0.2, 0.3)
    mesh = dc.Mesh(0.3, 2.0)
    y = mesh.sample(r)
    for el in dc.group_elements("dih4"):
        assert el.is_grid_exact
        moved = dc.transform_array(y, el, mesh)
        assert np.array_equal(mesh.sample(r, dc.element_matrix(el)), moved)
        assert sorted(moved.ravel()) == sorted(y.ravel())  # a permutation of the values
    quarter = get_group("rot4").element("rot90")
    assert np.array_equal(dc.transform_array(y, quarter, mesh), np.rot90(y, k=1))  # (x, y) -> (-y, x)
    assert not get_group("rot8").element("rot45").is_grid_exact
    assert not any(el.is_grid_exact for el in dc.group_elements("so2:9"))


def test_trig_interpolation_is_exact_at_nodes_and_accurate_between():
    r = _atom(1.0, (0.1, 0.0), 0.4, 0.3, 0.5)
    mesh = dc.Mesh(0.1, 3.0)
    y = mesh.sample(r)
    np.testing.assert_allclose(dc.trig_interpolate(y, mesh, mesh.points[::5, ::5]), y[::5, ::5], atol=1e-13)
    el = _turn(0.3)
    a = dc.element_matrix(el)
    np.testing.assert_allclose(dc.transform_array(y, el, mesh), mesh.sample(r, a), atol=1e-10)
    np.testing.assert_allclose(dc.transform_array(y, el, mesh, "cpu"), dc.transform_array(y, el, mesh), atol=1e-13)


def test_solver_reaches_tolerance_and_the_optimum():
    """CG stops at relative KKT residual <= tol; the result beats random perturbations; superposition in t holds."""
    cell = _tiny_cell()
    problem, (parts, asym) = bound._problem(cell), bound._dataset(cell)
    mesh = dc.Mesh(0.3, float(cell["radius"]))
    solver = dc.Solver(problem, mesh)
    t = 0.7
    observed = np.stack([mesh.sample((s + asym.scaled(t)).blurred(problem.blur)) for s in parts])
    template = np.broadcast_to(t * mesh.sample(asym), observed.shape).copy()
    x, kkt, _ = solver.solve(observed, template, tol=1e-13)
    assert kkt.max() <= 1e-13
    f0 = solver.objective(x, observed, template)
    rng = np.random.default_rng(0)
    for _ in range(3):
        dx = 1e-3 * rng.standard_normal(x.shape) * mesh.mask
        grow = solver.objective(x + dx, observed, template) - f0
        assert np.all(grow > 0)
        assert np.all(grow >= problem.mu * dc.norm2(dx, mesh.h) * (1 - 1e-6))  # mu-quadratic growth (SM5.26)
    xs, _, _ = solver.solve(np.stack([mesh.sample(s.blurred(problem.blur)) for s in parts]), 0 * template)
    xa, _, _ = solver.solve(mesh.sample(asym.blurred(problem.blur))[None], mesh.sample(asym)[None])
    np.testing.assert_allclose(x, xs + t * xa, atol=1e-10)


def test_single_atom_constants_by_hand():
    """Isotropic atom c = 2, sigma = 0.5: F1 = 2, G1 = 2 sqrt(pi/2)/0.5, H1 = 2*2/0.25; constants by SM5.52."""
    atom = _atom(2.0, (0.0, 0.0), 0.5, 0.5)
    f, g, hh = dc.fourier_bounds(atom)
    assert (f, g, hh) == pytest.approx((2.0, 4 * math.sqrt(math.pi / 2), 16.0), rel=1e-12)
    problem = dc.Deconvolution(blur=0.2, mu=0.5, lam=0.1, reg=0.25, tail=math.exp(-8))  # tau = 4
    assert problem.support_k == pytest.approx(0.8) and problem.support_reg == pytest.approx(2.0)
    kb = problem.kernel_bounds()
    assert kb["F2"] == pytest.approx(1 / (2 * math.pi * 0.04))
    assert kb["F3"] == pytest.approx((16 + 4) / (2 * math.pi))
    c = dc.theorem_constants({"F1": f, "G1": g, "H1": hh}, problem, radius=3.0)
    f1, g1, h1 = 2.0, 4 * math.sqrt(math.pi / 2), 16.0
    f2, g2, h2 = 1 / (0.08 * math.pi), math.exp(-0.5) / (0.016 * math.pi), 1 / (0.0032 * math.pi)
    f3 = 20 / (2 * math.pi)
    g3 = math.exp(-0.5) * (64 + 8) / (2 * math.pi)
    h3 = (256 + 16) / (2 * math.pi)
    c_reg = h3 * f1 + 2 * g1 * g3 + 2 * f3 * h1
    c0 = f1 * h2 + f2 * h1 + 2 * g1 * g2
    q = 1 + 4 * 0.64 * f2
    c_bar = 2 * q * (4 * c0 * 0.64 * f1 + (g1**2 + f1 * h1) * q)
    c1, c2 = 4 * c_reg / 0.5, 4 * c_bar / 0.5 + 8 * g1**2 + 8 * f1 * h1
    assert c["C1"] == pytest.approx(c1, rel=1e-12) and c["C2"] == pytest.approx(c2, rel=1e-12)
    assert c["a"] == pytest.approx(c1 * 5.0**2 + c2 * 3.8**2, rel=1e-12) and c["b"] == 4.0


def test_atom_bounds_dominate_sampled_sups():
    """Exact per-atom sups match dense sampling; the Fourier-L1 bounds dominate them (anisotropic by quadrature)."""
    atom = _atom(1.3, (0.2, -0.1), 0.5, 0.2, 0.6)
    mesh = dc.Mesh(0.01, 2.0)
    sup, grad, hess = dc.spectral_sups(mesh.sample(atom), mesh)
    exact = dc.exact_atom_sups(1.3, atom.covariances[0])
    assert (sup, grad, hess) == pytest.approx(exact, rel=1e-3)
    fourier = dc.fourier_bounds(atom)
    assert np.all(fourier >= np.asarray(exact) * (1 - 1e-12))
    assert fourier[2] == pytest.approx(1.3 * (1 / 0.25 + 1 / 0.04), rel=1e-12)


def test_continuum_norms_match_closed_forms_and_eps_ratio_is_at_most_a_quarter():
    """Parseval on the fine grid reproduces closed-form L2 norms of Gaussian atoms; ``mu^2 ||H^-1 d||^2`` is at most
    ``||d||^2 / 4`` of ``(2/mu) eps / t^2 = 4 ||d||^2``, and zero for a centred isotropic template."""
    cell = _tiny_cell()
    problem, (_, asym) = bound._problem(cell), bound._dataset(cell)
    grid = ct.FourierGrid(dc.Mesh(0.2, 6.0))
    el = get_group("rot8").element("rot45")
    moved = asym.transformed(dc.element_matrix(el))
    closed = asym.inner(asym) - 2 * asym.inner(moved) + moved.inner(moved)
    assert ct.asymmetry(asym, el, grid) == pytest.approx(closed, rel=1e-10)
    cont = ct.continuum_error(asym, el, problem, grid)
    assert 0 < cont <= closed * problem.mu**2 / problem.mu**2  # H >= mu
    assert ct.eps_squared(closed, 2.0, problem) * 2 / problem.mu == pytest.approx(4 * 4.0 * closed)
    iso = _atom(1.0, (0.0, 0.0), 0.3, 0.3)
    assert ct.continuum_error(iso, el, problem, grid) < 1e-25


def test_bump_profiles_fourier_bounds_and_blur():
    """The finite-smoothness atom: its blurred profile matches a brute-force convolution, its transform matches
    Parseval, its Fourier-L1 bounds dominate the sampled sups, and a grid optimum equals the continuum one."""
    r, rk, q = 0.5, 0.3, 3
    h = 0.004
    x = np.arange(-1.0, 1.0 + h / 2, h)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    b = bumps.profile(np.hypot(xx, yy), r, q)
    k = bumps.profile(np.hypot(xx, yy), rk, q) / bumps.kernel_mass(rk, q)
    from scipy.signal import fftconvolve

    conv = fftconvolve(b, k, mode="same") * h * h
    mid = len(x) // 2
    spline = bumps.blurred_profile(r, rk, q)
    np.testing.assert_allclose(conv[mid : mid + 200 : 25, mid], spline(x[mid : mid + 200 : 25]), atol=1e-6)
    image = bumps.BumpImage(np.array([1.0, -0.5]), np.array([[0.2, 0.1], [-0.3, 0.0]]), r, q)
    grid = ct.FourierGrid(dc.Mesh(0.1, 2.0))
    mesh_norm = dc.norm2(image.evaluate(np.stack(np.meshgrid(x, x, indexing="ij"), -1)), h)
    assert float(grid.norm2(grid.spectrum(image))) == pytest.approx(float(mesh_norm), rel=1e-5)
    rho = np.linspace(0, r, 100_001)
    sups = bumps.radial_sups(bumps.profile(rho, r, q), rho)
    assert np.all(np.asarray(bumps.fourier_integrals(r, q)) >= np.asarray(sups))
    with pytest.raises(ValueError, match="q >= 3"):
        bumps.fourier_integrals(r, 2)


@functools.lru_cache(maxsize=1)
def _theorem_rows() -> pd.DataFrame:
    """The unbroken setting, shared by the positive checks: meshes down to 0.1, where the Gaussian case converges."""
    return _rows(meshes=(0.4, 0.3, 0.25, 0.2, 0.12, 0.1))


def _rows(monkeypatch=None, solver=None, action=None, family="gaussian", meshes=(0.4, 0.3, 0.25, 0.2), **changes):
    """Mesh rows of a tiny run (one image, rot4 and so2:3, t in 0, 0.5, 1; continuum grid step 0.1, enough for the
    Gaussian family), optionally with a broken solver or a broken group action patched in."""
    cfg = load_config("bound", "quick")
    cfg.update(images=1, meshes=list(meshes), ts=[0.0, 0.5, 1.0], groups=["rot4", "so2:3"], families=[family])
    cfg.update(fine_step=0.1)
    cfg["measure"] = {**cfg["measure"], "windows": 0}
    cfg.update(changes)
    if solver is not None:
        monkeypatch.setattr(dc, "Solver", solver)
    if action is not None:
        monkeypatch.setattr(dc, "transform_array", action)
    frame = pd.DataFrame([row for cell in bound.cells(cfg) for row in bound.run_cell(cell, None)])
    frame.insert(0, "kind", "mesh")
    return bound.summary(frame)


class _AnisotropicRegulariser(dc.Solver):
    """Negative control: ``k_R`` stretched along x, so the regulariser is not rotation invariant."""

    def __init__(self, problem, mesh):
        super().__init__(problem, mesh)
        off = np.fft.fftfreq(self.n, d=1.0 / self.n) * mesh.h
        s = problem.reg
        xx, yy = off[:, None] ** 2, off[None, :] ** 2
        stretched = np.exp(-xx / (8 * s**2) - yy / (2 * s**2)) / (4 * math.pi * s**2)
        self.kr_hat = np.real(np.fft.rfft2(stretched))
        self.normal_hat = mesh.h**4 * (self.k_hat**2 + problem.lam * self.kr_hat**2)


class _WrongPower(dc.Solver):
    """Negative control: the blur's Riemann sum weighted by ``h`` instead of ``h^2``."""

    def __init__(self, problem, mesh):
        super().__init__(problem, mesh)
        self.k_hat = self.k_hat / mesh.h
        self.normal_hat = mesh.h**4 * (self.k_hat**2 + problem.lam * self.kr_hat**2)


_transform = dc.transform_array


def _inverse_action(y, element, mesh, device=None):
    """Negative control: ``pi~_A`` applied as ``pi~_{A^-1}`` (the wrong group action)."""
    return _transform(y, element.inverse(), mesh, device)


def test_checks_pass_on_the_theorem_setting():
    s = _theorem_rows()
    assert bound.check_exact(s) and bound.check_rate(s) and bound.check_continuum(s)
    assert bound.check_eps_slope(s) and bound.check_bounds(s)
    r = bound.rates(s).set_index(["group", "quantity"])
    assert r.loc[("so2:3", "measured"), "low"] >= 2 and r.loc[("rot4", "measured"), "exact"]


def test_non_equivariant_regulariser_fails_exactness_and_rate(monkeypatch):
    s = _rows(monkeypatch, solver=_AnisotropicRegulariser, meshes=(0.4, 0.3, 0.25))
    assert not bound.check_exact(s)
    assert not bound.check_rate(s)


def test_wrong_power_of_h_fails_the_continuum_equality(monkeypatch):
    s = _rows(monkeypatch, solver=_WrongPower, meshes=(0.2, 0.12, 0.1))
    assert not bound.check_continuum(s)
    fine = s[(s["h"] == s["h"].min()) & (s["t"] > 0) & (s["group"] == "rot4")]
    assert (fine["continuum_rel_diff"] > 0.1).all()
    step1 = bound.rates(s).set_index("quantity").loc["step1"]
    assert step1["high"] < 2  # |F - F~| no longer falls like h^2: proof step 1's rate says no too


def test_wrong_group_action_fails_exactness_and_rate(monkeypatch):
    s = _rows(monkeypatch, action=_inverse_action, meshes=(0.4, 0.3, 0.25))
    assert not bound.check_exact(s)
    assert not bound.check_rate(s)


def test_eps_in_linear_units_fails_the_slope_check():
    """The old design eps grew like t while the error grows like t^2: the ratio drifts with t, and the check says
    so; the squared-units eps passes on the same rows."""
    s = _theorem_rows()
    assert bound.check_eps_slope(s)
    linear = s.assign(eps=np.sqrt(s["eps"]))
    linear["bound_eps"] = linear["b"] * linear["eps"]
    linear["eps_ratio"] = linear["measured"] / linear["bound_eps"]
    assert not bound.check_eps_slope(linear)


def test_bound_without_its_h2_term_fails_the_bound_check():
    """Without the discretisation term the bound is 0 at t = 0, below the rot8 error: the check rejects it."""
    s = _theorem_rows()
    assert bound.check_bounds(s)
    broken = s.assign(bound=s["bound_eps"])
    assert not bound.check_bounds(broken)


def test_tiny_instance_measured_under_bound():
    """A tiny run: every (group, t) point is under the theorem's bound; quarter turns exact at t = 0; the support
    constraint is inactive and the optimum obeys the bounds F1, G1, H1 used in the constants."""
    rows = pd.DataFrame(bound.run_cell(_tiny_cell(), None))
    assert len(rows) == 6
    assert (rows["measured"] <= rows["bound"]).all(), rows[["group", "t", "measured", "bound"]]
    assert (rows["step1"] <= rows["step1_bound"]).all() and (rows["step2"] <= rows["step2_bound"]).all()
    assert rows["kkt_residual"].max() <= 1e-13
    assert (rows["assumption_ratio"] <= 1).all() and rows["boundary"].max() < 1e-8
    zero = rows[rows["t"] == 0].set_index("group")["measured"]
    assert zero["rot4"] < 1e-20 and zero["rot8"] > 1e-12  # 45 degrees is not a permutation at h = 0.4
    one = rows[rows["t"] == 1].set_index("group")
    assert (one["measured"] > zero).all() and (one["eps"] > 0).all() and (one["continuum"] > 0).all()


def test_verdict_reports_a_violation_from_the_numbers():
    """The verdict is computed: a row over its bound is reported as a violation with its ratio."""
    rows = pd.DataFrame(bound.run_cell(_tiny_cell(), None))
    rows.insert(0, "kind", "mesh")
    assert "measured <= bound at 6 of 6" in bound.verdict(rows, {})
    rows.loc[3, "bound"] = rows.loc[3, "measured"] / 2
    rows.loc[3, "ratio"] = 2.0
    text = bound.verdict(rows, {})
    assert "VIOLATED at 1 points, worst 2x" in text


def test_support_check_refuses_a_small_radius():
    with pytest.raises(ValueError, match="smaller than the images' support"):
        bound.check_support(_tiny_cell(radius=2.0))


def test_measure_cell_calls_the_toolkit_on_the_same_images():
    """A tiny ``measure`` cell: symmetry.measure on the analytic images reports MMD (unbiased: may be < 0), Frechet."""
    cfg = load_config("bound", "quick")
    cfg.update(images=2, meshes=[])
    small = {"ts": [1.0], "measure_images": 3, "windows": 8, "permutations": 20, "window_radius": 4.0}
    cfg["measure"] = {**cfg["measure"], **small}
    (cell,) = bound.cells(cfg)
    (row,) = bound.run_cell(cell, None)
    assert row["t"] == 1.0 and np.isfinite(row["mmd"]) and row["frechet"] >= 0 and 0 <= row["mmd_p_value"] <= 1
    parts, _ = bound._dataset(cell, 3)
    first, _ = bound._dataset(cell)
    assert np.array_equal(parts[0].centres, first[0].centres)  # the experiment's images lead the measured ones
