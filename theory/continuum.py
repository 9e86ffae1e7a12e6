"""The continuum limit of the bound experiment and each step of Theorem 3.6's proof, computed (docs/theory.md, 2.2).

Everything here is the ``h -> 0`` side of :mod:`theory.deconvolution`, evaluated in Fourier space where the
objective is diagonal. With ``H(w) = |k^(w)|^2 + mu + lam |k_R^(w)|^2 >= mu`` (:meth:`Deconvolution.hessian`):

- the continuum optimum is ``Phi^ = (k^ y^ + mu m^) / H`` (``y = r_hat`` the observation, ``m`` the template);
- with the template left untransformed, ``Phi(pi_A y) - pi_A Phi(y) = mu H^-1 (m - pi_A m)`` exactly, so the
  continuum equivariance error of sample ``n`` is ``mu^2 t^2 ||H^-1 (a - pi_A a)||^2`` (:func:`continuum_error`),
  the same for every sample: the value the measured error must reach as ``h -> 0`` (an equality, not a bound);
- eps in squared units (:func:`eps_squared`): ``eps_A = 2 mu ||m - pi_A^-1 m||^2 = 2 mu t^2 ||a - pi_A a||^2``.
  Theorem 3.3's argument (quadratic growth, ``Delta(r) = F_A[pi_A r] - F[r] = -2 mu <r, pi_A^-1 m - m>``) gives
  ``mu X^2 <= Delta(r*) - Delta(pi_A^-1 s*) <= 2 mu X ||m - pi_A^-1 m||`` for ``X = ||s* - pi_A r*||``, hence
  ``X^2 <= 4 t^2 ||a - pi_A a||^2 = (2/mu) eps_A``. The continuum error over this bound is
  ``mu^2 ||H^-1 d||^2 / (4 ||d||^2)`` (``d = a - pi_A a``): independent of ``t``, at most 1/4 (``H >= mu``);
- step 1 of the proof: ``|F[r] - F~[r]|`` (continuum objective against its Riemann sum) at ``r = Phi`` (a point of
  the feasible set; the proof bounds the sup); step 2: ``||Phi - Phi~||^2 <= 2 sup |F - F~| / mu`` (quadratic growth
  and optimality of ``Phi~`` for ``F~``), measured on the mesh nodes.

Norms and optima use a fine periodic grid (:class:`FourierGrid`: step at most 0.025, side at least four times the
mesh's radius): Parseval's sum over its frequencies is the plane integral up to the images' tails beyond the box
and their spectra beyond its Nyquist frequency (``< 1e-15`` relative here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from symmetry.groups import GroupElement
from theory.deconvolution import Deconvolution, Mesh, element_matrix, norm2

FINE_STEP = 0.025


@dataclass
class FourierGrid:
    """A periodic grid of step ``h / k`` (``k`` the smallest with ``h / k <= fine_step``) holding the mesh ``mesh``
    as a sub-lattice, ``n`` points a side, side ``L = n h / k >= 4 radius``; axis 0 is ``x``, index 0 the origin."""

    mesh: Mesh
    fine_step: float = FINE_STEP
    k: int = field(init=False)
    n: int = field(init=False)
    step: float = field(init=False)
    w: np.ndarray = field(init=False)

    def __post_init__(self):
        self.k = max(1, math.ceil(self.mesh.h / self.fine_step - 1e-9))
        self.step = self.mesh.h / self.k
        self.n = 2 * math.ceil((self.mesh.radius + 1.0) / self.step)  # the mesh's box plus a margin of 1 each side
        freq = 2 * math.pi * np.fft.fftfreq(self.n, d=self.step)
        wx, wy = np.meshgrid(freq, freq, indexing="ij")
        self.w = np.stack([wx, wy], -1)
        self.radial = np.sqrt(wx**2 + wy**2)
        self._memo: dict = {}

    @property
    def side(self) -> float:
        return self.n * self.step

    def transfer(self, problem: Deconvolution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(k^, k_R^, H)`` on the grid's frequencies (computed once per problem)."""
        if problem not in self._memo:
            k, kr = problem.kernel_transform(self.radial), problem.reg_transform(self.radial)
            self._memo[problem] = (k, kr, k**2 + problem.mu + problem.lam * kr**2)
        return self._memo[problem]

    def spectrum(self, image) -> np.ndarray:
        """``r^`` on the grid's frequencies; the radial factor of bump images is computed once per atom shape."""
        radial_of = getattr(image, "radial_transform", None)
        if radial_of is None:
            return image.fourier(self.w)
        key = (image.radius, image.q, image.blur)
        if key not in self._memo:
            self._memo[key] = radial_of(self.radial)
        return self._memo[key] * image.phases(self.w)

    def norm2(self, spectrum: np.ndarray) -> np.ndarray:
        """``||f||^2 = (2 pi)^-2 int |f^|^2`` by Parseval on the periodic box, over the last two axes."""
        return (np.abs(spectrum) ** 2).sum((-2, -1)) / self.side**2

    def on_mesh(self, spectrum: np.ndarray) -> np.ndarray:
        """``f`` at the mesh nodes ``(..., m, m)`` from its transform on the grid's frequencies."""
        values = np.real(np.fft.ifft2(spectrum)) / self.step**2  # values at j * step, j wrapped
        half = (self.mesh.m - 1) // 2
        idx = (np.arange(-half, half + 1) * self.k) % self.n
        return values[..., idx[:, None], idx[None, :]]


def transform_of(images: list, grid: FourierGrid) -> np.ndarray:
    """``(len(images), n, n)`` transforms on the grid's frequencies."""
    return np.stack([grid.spectrum(im) for im in images])


def continuum_optimum(observed: np.ndarray, template: np.ndarray, problem: Deconvolution, grid: FourierGrid):
    """``Phi^ = (k^ y^ + mu m^) / H`` for transforms ``y^`` (observations) and ``m^`` (templates)."""
    k, _, hess = grid.transfer(problem)
    return (k * observed + problem.mu * template) / hess


def continuum_objective(
    r: np.ndarray, observed: np.ndarray, template: np.ndarray, problem: Deconvolution, grid: FourierGrid
) -> np.ndarray:
    """``F[r] = ||y - k * r||^2 + lam ||k_R * r||^2 + mu ||r - m||^2`` from transforms (per image)."""
    k, kr, _ = grid.transfer(problem)
    return grid.norm2(observed - k * r) + problem.lam * grid.norm2(kr * r) + problem.mu * grid.norm2(r - template)


def _pair(asym, element: GroupElement, grid: FourierGrid) -> np.ndarray:
    """Transform of ``d = a - pi_A a``."""
    return grid.spectrum(asym) - grid.spectrum(asym.transformed(element_matrix(element)))


def continuum_error(asym, element: GroupElement, problem: Deconvolution, grid: FourierGrid) -> float:
    """``mu^2 ||H^-1 (a - pi_A a)||^2``: the continuum equivariance error per unit ``t^2`` (module docstring)."""
    d = _pair(asym, element, grid)
    return float(problem.mu**2 * grid.norm2(d / grid.transfer(problem)[2]))


def asymmetry(asym, element: GroupElement, grid: FourierGrid) -> float:
    """``||a - pi_A a||^2``."""
    return float(grid.norm2(_pair(asym, element, grid)))


def eps_squared(gap: float, t: float, problem: Deconvolution) -> float:
    """``eps_A = 2 mu t^2 ||a - pi_A a||^2`` (``gap`` the squared norm): ``(2/mu) eps_A = 4 t^2 gap``."""
    return 2.0 * problem.mu * t**2 * gap


def step_bounds(constants: dict[str, float], h: float) -> dict[str, float]:
    """Our reading of SM5.31 and of the step after it: ``sup |F - F~| <= [C_reg (D_r + D_R)^2 + C_bar (D_r + D_k)^2]
    h^2`` (the bracket that ``C1 = 4 C_reg / mu`` and ``C2``'s ``4 C_bar / mu`` multiply) and
    ``||Phi - Phi~||^2 <= 2 sup |F - F~| / mu``."""
    c = constants
    riemann = (c["C_reg"] * (c["D_r"] + c["D_R"]) ** 2 + c["C_bar"] * (c["D_r"] + c["D_k"]) ** 2) * h**2
    return {"step1_bound": riemann, "step2_bound": riemann * c["b"]}  # b = 2 / mu


def proof_steps(
    phi_fine: np.ndarray,
    observed: np.ndarray,
    template: np.ndarray,
    discrete: np.ndarray,
    solver,
    grid: FourierGrid,
) -> dict[str, np.ndarray]:
    """Per image: step 1 ``|F[Phi] - F~[Phi]|`` and step 2 ``||Phi - Phi~||_F^2`` on the mesh.

    ``phi_fine``, ``observed``, ``template``: transforms on the grid; ``discrete``: the mesh optima ``Phi~``;
    ``solver``: the mesh problem (:class:`theory.deconvolution.Solver`)."""
    problem, mesh = solver.problem, solver.mesh
    phi = grid.on_mesh(phi_fine)
    f_cont = continuum_objective(phi_fine, observed, template, problem, grid)
    f_disc = solver.objective(phi, grid.on_mesh(observed), grid.on_mesh(template))
    return {"step1": np.abs(f_cont - f_disc), "step2": norm2(phi - discrete, mesh.h)}


def fit_exponent(h, error, level: float = 0.95) -> dict[str, float]:
    """Least-squares slope of ``log error`` against ``log h`` with its two-sided Student t interval (``n - 2`` dof).

    Returns ``exponent, low, high, n`` (NaN interval with fewer than three points)."""
    x, y = np.log(np.asarray(h, float)), np.log(np.asarray(error, float))
    n = x.size
    if n < 2:
        return {"exponent": math.nan, "low": math.nan, "high": math.nan, "n": n}
    fit = stats.linregress(x, y)
    if n < 3:
        return {"exponent": float(fit.slope), "low": math.nan, "high": math.nan, "n": n}
    half = float(stats.t.ppf(0.5 + level / 2, n - 2)) * float(fit.stderr)
    return {"exponent": float(fit.slope), "low": fit.slope - half, "high": fit.slope + half, "n": n}
