"""The optimal linear restoration operator of synthetic fields and its equivariance error (Theorem 3.6).

Theorem 3.6 bounds the equivariance error of the *optimal* discrete restoration operator by ``a h^2 + b eps``.
The optimum is computable when it is restricted to linear operators: the linear minimum-mean-square-error
(LMMSE, Wiener) estimator ``W = C_xy (C_yy + sigma^2 I)^-1`` needs only the second-order statistics of the data,
and those of :mod:`symmetry.synthetic` fields are known in closed form up to a one-dimensional quadrature.

**Covariance of an atom field.** An :class:`~symmetry.synthetic.AtomField` is ``r(x) = sum_k a_k g_k(x - c_k)``
with ``K`` centres uniform on a square of side ``2 * reach``, independent amplitudes ``a = +-U(0.5, 1)`` (mean 0,
``E a^2 = 7/12``) and Gaussian atoms ``g(u) = exp(-u' S_theta^-1 u / 2)``, ``S_theta = R_theta diag(long^2,
short^2) R_theta'``. Away from the square's edge the field is stationary with mean 0 and

    C(d) = lambda E[a^2] E_theta  integral g_theta(x - c) g_theta(x + d - c) dc
         = lambda E[a^2] pi long short E_theta exp(-d' S_theta^-1 d / 4),          lambda = K / (2 reach)^2.

A Gaussian blur of standard deviation ``b`` (Section 3's degradation ``k * r``) keeps atoms Gaussian, so the
cross-covariance of the clean and the blurred field is again closed form (``beta`` below is the summed blur
variance of the two fields compared: 0 clean-clean, ``b^2`` clean-blurred, ``2 b^2`` blurred-blurred):

    C_beta(d) = lambda E[a^2] 2 pi long^2 short^2 / sqrt((2 long^2 + beta)(2 short^2 + beta))
                E_theta exp(-((d.u)^2 / (2 long^2 + beta) + (d.v)^2 / (2 short^2 + beta)) / 2).

The expectation over the orientation law (uniform, von Mises or k-fold mixture; atoms are half-turn symmetric,
so only ``theta mod pi`` matters) is the trapezoid rule on :data:`ORIENTATION_NODES` equispaced angles, which
converges geometrically for these smooth periodic integrands (quadrature precision, no Monte Carlo).

**Equivariance error of a linear operator.** The transformation ``pi~_A`` on lattice values is the project's
(:mod:`symmetry.transforms`: bicubic Keys interpolation for non-grid angles, an exact permutation for quarter
turns and axis flips), written as a matrix ``T_A``. For observations ``y`` on a disk of radius ``radius`` the
error on the central disk ``E`` of radius ``eval_radius`` is ``Delta_A y = W T_A y - T_A W y`` (restricted to
``E``; ``T_A y`` reads ``y`` on a slightly larger disk), and its expectation is exact:

    e_A(h) = E ||Delta_A y||^2 / E ||T_A W y||^2 = tr(Delta_A Sigma Delta_A') / tr(T_A W Sigma W' T_A'),

the ratio-of-expectations form of :func:`analysis.equivariance.equivariance_error` (relative, central disk).
The theorem's ``(1/N) sum_n ||.||_F^2`` is the numerator; dividing by the signal term makes meshes comparable.

**Symmetry error.** :func:`covariance_symmetry_error` is the relative squared L2 distance between the window
covariance of the data and of its transformed copy, ``||C - C o A^-1||^2 / ||C||^2`` over offsets ``|d| <= 2
radius`` (continuum, mesh-free). The LMMSE operator depends on the data only through ``C``, and to first order
its equivariance defect is linear in ``C - C o A^-1``, so its squared error is linear in this ``eps``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.optimize import linprog, nnls
from torch import nn

from symmetry.errors import UsageError
from symmetry.groups import Group, GroupElement, get_group
from symmetry.synthetic import DEFAULTS, FAMILIES, parse_spec
from symmetry.transforms import disk_offsets, lattice_operator

ORIENTATION_NODES = 256
"""Trapezoid nodes on ``[0, pi)`` for the expectation over atom orientations."""
AMPLITUDE_MOMENT = 7.0 / 12.0
"""``E a^2`` for the atom amplitudes of :func:`symmetry.synthetic.make_fields` (``+-U(0.5, 1)``)."""
TRANSFORM_MARGIN = 3
"""Lattice steps by which an input disk must exceed the disk it is transformed onto (bicubic taps reach 2*sqrt 2)."""
LAW_FAMILIES = ("isotropic", "vonmises", "kfold")
"""Synthetic families whose covariance :class:`FieldLaw` knows (stationary: no per-image deformation)."""
_CHUNK = 8192


@dataclass(frozen=True)
class FieldLaw:
    """Second-order law of a :mod:`symmetry.synthetic` family (same parameter names and defaults)."""

    family: str = "isotropic"
    kappa: float = float(DEFAULTS["kappa"])
    mu: float = float(DEFAULTS["mu"])
    k: int = int(DEFAULTS["k"])
    long: float = float(DEFAULTS["long"])
    short: float = float(DEFAULTS["short"])
    atoms: int = int(DEFAULTS["atoms"])
    size: float = float(DEFAULTS["size"])

    def __post_init__(self) -> None:
        if self.family not in LAW_FAMILIES:
            known = "unknown" if self.family not in FAMILIES else "no closed-form covariance for"
            raise UsageError(f"{known} synthetic family {self.family!r}; choose one of {', '.join(LAW_FAMILIES)}")
        if self.kappa < 0 or self.long <= 0 or self.short <= 0 or self.atoms < 1 or self.size <= 0 or self.k < 1:
            raise UsageError("kappa must be >= 0 and long, short, atoms, size, k positive")

    @classmethod
    def from_spec(cls, spec: str) -> FieldLaw:
        """``FieldLaw.from_spec("synthetic:vonmises,kappa=2,long=3")``."""
        family, params = parse_spec(spec if ":" in spec else f"synthetic:{spec}")
        keep = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
        return cls(family=family, **keep)

    def synthetic_params(self) -> dict:
        """Keyword arguments for :func:`symmetry.synthetic.make_fields` that draw fields of this law."""
        p = asdict(self)
        p.pop("family")
        return p

    def spec(self, **extra) -> str:
        """The dataset spec string (``synthetic:FAMILY,key=value,...``) of this law."""
        p = {**self.synthetic_params(), **extra}
        return f"synthetic:{self.family}," + ",".join(f"{k}={v:g}" for k, v in p.items())

    @property
    def intensity(self) -> float:
        """Atoms per unit area, ``lambda = K / (2 reach)^2`` with ``reach = size / 2 + 3 long``."""
        reach = self.size / 2 + 3 * self.long
        return self.atoms / (2 * reach) ** 2

    @property
    def variance(self) -> float:
        """``C(0)``, the pointwise variance of the clean field."""
        return self.intensity * AMPLITUDE_MOMENT * math.pi * self.long * self.short

    def orientations(self, nodes: int = ORIENTATION_NODES) -> tuple[torch.Tensor, torch.Tensor]:
        """Trapezoid nodes ``theta`` on ``[0, pi)`` and weights (summing to 1) of the orientation law mod pi."""
        theta = torch.arange(nodes, dtype=torch.float64) * (math.pi / nodes)
        if self.family == "isotropic" or self.kappa == 0:
            return theta, torch.full((nodes,), 1.0 / nodes, dtype=torch.float64)
        mu = math.radians(self.mu)
        branches = [mu] if self.family == "vonmises" else [mu + 2 * math.pi * j / self.k for j in range(self.k)]
        # density of theta on [0, 2 pi), folded mod pi: log-sum-exp over branches and the two half turns
        logs = [self.kappa * torch.cos(theta + s - b) for b in branches for s in (0.0, math.pi)]
        logd = torch.logsumexp(torch.stack(logs), dim=0)
        return theta, torch.softmax(logd, dim=0)

    def covariance(self, offsets: torch.Tensor, beta: float = 0.0, nodes: int = ORIENTATION_NODES) -> torch.Tensor:
        """``C_beta(d)`` at physical offsets ``(..., 2)`` (x, y); ``beta`` = summed blur variance (module doc)."""
        d = offsets.to(torch.float64)
        shape = d.shape[:-1]
        d = d.reshape(-1, 2)
        theta, weights = self.orientations(nodes)
        c, s = torch.cos(theta), torch.sin(theta)
        lu, lv = 2 * self.long**2 + beta, 2 * self.short**2 + beta
        pref = self.intensity * AMPLITUDE_MOMENT * 2 * math.pi * self.long**2 * self.short**2 / math.sqrt(lu * lv)
        # d' (2 S_theta + beta)^-1 d = x^2 A + x y B + y^2 C, one column per orientation node
        quad = torch.stack([c * c / lu + s * s / lv, 2 * c * s * (1 / lu - 1 / lv), s * s / lu + c * c / lv])
        out = torch.empty(d.shape[0], dtype=torch.float64)
        for i in range(0, d.shape[0], _CHUNK):
            x, y = d[i : i + _CHUNK, 0], d[i : i + _CHUNK, 1]
            monomials = torch.stack([x * x, x * y, y * y], dim=1)
            out[i : i + _CHUNK] = torch.exp(-0.5 * (monomials @ quad)) @ weights
        return (pref * out).reshape(shape)

    def transformed(self, element: GroupElement) -> TransformedLaw:
        """The law of ``pi_A r`` (covariance ``C(A^-1 d)``)."""
        return TransformedLaw(self, element)


@dataclass(frozen=True)
class TransformedLaw:
    """Covariance of the transformed field ``pi_A r``: ``C_A(d) = C(A^-1 d)``."""

    law: FieldLaw
    element: GroupElement

    def covariance(self, offsets: torch.Tensor, beta: float = 0.0, nodes: int = ORIENTATION_NODES) -> torch.Tensor:
        inv = self.element.tensor(torch.float64).T  # orthogonal
        return self.law.covariance(offsets.to(torch.float64) @ inv.T, beta, nodes)


# ---- lattices and covariance matrices -------------------------------------------------


def lattice_disk(radius: float, mesh: float) -> torch.Tensor:
    """Integer lattice indices ``(P, 2)`` (x, y) of the disk of physical radius ``radius`` at mesh ``mesh``.

    Order as :func:`symmetry.transforms.disk_offsets`; radius 0 is the origin alone.
    """
    if radius == 0:
        return torch.zeros(1, 2, dtype=torch.long)
    return disk_offsets(radius, mesh).round().long()


def lattice_covariance(
    law: FieldLaw | TransformedLaw, index_a: torch.Tensor, index_b: torch.Tensor, mesh: float, beta: float = 0.0
) -> torch.Tensor:
    """``C_beta(mesh * (i - j))`` for lattice indices ``i`` in ``index_a`` ``(P, 2)``, ``j`` in ``index_b`` ``(Q, 2)``.

    The covariance is evaluated once per distinct lattice offset and gathered, so the cost grows with the
    number of offsets, not of pairs.
    """
    diff = index_a[:, None, :] - index_b[None, :, :]
    reach = int(diff.abs().max()) if diff.numel() else 0
    span = torch.arange(-reach, reach + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(span, span, indexing="ij")
    table = law.covariance(mesh * torch.stack([gx, gy], dim=-1), beta)  # [y + reach, x + reach]
    return table[diff[..., 1] + reach, diff[..., 0] + reach]


def window_covariance(
    law: FieldLaw | TransformedLaw | str, mesh: float, radius: float, beta: float = 0.0
) -> torch.Tensor:
    """Covariance ``(P, P)`` of a field's values on the mesh-``h`` lattice disk of physical radius ``radius``.

    Point order is that of :func:`symmetry.transforms.disk_offsets` (the windows of ``symmetry.measure``).
    """
    if isinstance(law, str):
        law = FieldLaw.from_spec(law)
    index = lattice_disk(radius, mesh)
    return lattice_covariance(law, index, index, mesh, beta)


def lmmse_operator(
    cross_covariance: torch.Tensor, observed_covariance: torch.Tensor, noise_sigma: float
) -> torch.Tensor:
    """The LMMSE (Wiener) estimator ``W = C_xy (C_yy + sigma^2 I)^-1`` of ``x`` from ``y + noise``.

    ``cross_covariance`` ``C_xy`` is ``(P_out, P_in)`` (target against noise-free observation), ``observed_covariance``
    ``C_yy`` is ``(P_in, P_in)``; the noise is white with standard deviation ``noise_sigma`` per lattice value.
    ``W`` minimises ``E ||x - W (y + n)||^2`` over all linear maps (orthogonality principle).
    """
    sigma = cross_covariance.new_tensor(float(noise_sigma))
    k = observed_covariance + sigma**2 * torch.eye(observed_covariance.shape[0], dtype=observed_covariance.dtype)
    chol = torch.linalg.cholesky(k)
    return torch.cholesky_solve(cross_covariance.T.contiguous(), chol).T


# ---- the transformation pi~_A as a matrix ---------------------------------------------


def transform_matrix(
    element: GroupElement, source: torch.Tensor, target: torch.Tensor, interpolation: str = "bicubic"
) -> torch.Tensor:
    """``T`` ``(P_target, P_source)`` with ``(pi~_A y)[target] = T y[source]``, for lattice indices ``(P, 2)``.

    :func:`symmetry.transforms.lattice_operator` (rotation about the lattice origin, the weights of
    :func:`~symmetry.transforms.interpolate`; an exact 0/1 selection for grid-exact elements). Every tap must
    fall on a ``source`` point: each row of ``T`` then sums to 1.
    """
    out = lattice_operator(element.tensor(torch.float64)[None], source, target, interpolation)[0]
    lost = (out.sum(1) - 1).abs().max() if out.numel() else 0.0
    if lost > 1e-9:
        raise UsageError(f"the source points do not cover the interpolation taps (row sums off by {float(lost):.2e})")
    return out


# ---- equivariance error of the optimal operator -----------------------------------------


NOISE_MODELS = ("pixel", "white")


@dataclass(frozen=True)
class Restoration:
    """A restoration problem on mesh ``h``: observe ``k_blur * r`` plus white noise on a disk, restore ``r``.

    ``noise`` is the noise standard deviation in units of the clean field's, ``sqrt(C(0))``. ``noise_model``:

    - ``"white"`` (default): continuum white noise averaged over each mesh cell, deviation ``noise / h`` per
      lattice value, so the continuous problem is the same at every mesh and only its discretisation changes (the
      setting of Lemma 3.4 and Theorem 3.6: the same degraded image sampled more finely);
    - ``"pixel"``: i.i.d. per lattice value with deviation ``noise`` at every mesh, as the project's ``denoise``
      task adds noise to an image at its mesh; a finer mesh then sees more samples of the same content, so the
      problem gets easier as ``h`` falls.

    White noise is not a smooth image: interpolating it (``pi~_A``) aliases some of it into the band the
    operator keeps, which leaves an ``h``-independent part of the equivariance error under ``"white"``.
    """

    law: FieldLaw
    mesh: float
    radius: float = 5.0
    eval_radius: float = 1.5
    noise: float = 1.0
    noise_model: str = "white"
    blur: float = 0.0
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.mesh <= 0 or self.eval_radius < 0 or self.noise <= 0 or self.blur < 0:
            raise UsageError("mesh and noise must be > 0, eval_radius and blur >= 0")
        if self.eval_radius > self.radius:
            raise UsageError(f"eval_radius {self.eval_radius} exceeds the window radius {self.radius}")
        if self.noise_model not in NOISE_MODELS:
            raise UsageError(f"unknown noise model {self.noise_model!r}; choose one of {', '.join(NOISE_MODELS)}")

    @property
    def noise_sigma(self) -> float:
        """Noise standard deviation per lattice value at this mesh (absolute units)."""
        sigma = self.noise * math.sqrt(self.law.variance)
        return sigma / self.mesh if self.noise_model == "white" else sigma


@dataclass
class OptimalOperator:
    """The LMMSE operator of a :class:`Restoration` with everything needed to transform it."""

    problem: Restoration
    index_obs: torch.Tensor  # disk radius + margin: what T_A y reads
    index_in: torch.Tensor  # the window the operator sees
    index_out: torch.Tensor  # outputs needed by T_A W y on the evaluation disk
    index_eval: torch.Tensor  # the central evaluation disk
    signal: torch.Tensor  # covariance of the noise-free observation k * r on index_obs
    noise_var: float  # per-value noise variance
    operator: torch.Tensor  # W: index_in -> index_out
    mse: float  # mean squared error per value on the evaluation disk, relative to C(0)

    @property
    def observed(self) -> torch.Tensor:
        """``Sigma``: covariance of the noisy observation on ``index_obs``."""
        return self.signal + self.noise_var * torch.eye(self.signal.shape[0], dtype=self.signal.dtype)


def _positions(big: torch.Tensor, small: torch.Tensor) -> torch.Tensor:
    """Row numbers of the lattice points ``small`` inside ``big`` (both ``(P, 2)``)."""
    key = {(int(x), int(y)): i for i, (x, y) in enumerate(big.tolist())}
    return torch.tensor([key[(int(x), int(y))] for x, y in small.tolist()], dtype=torch.long)


def optimal_operator(problem: Restoration) -> OptimalOperator:
    """Build ``W = C_{r, k*r}(C_{k*r} + sigma_h^2 I)^-1`` on ``problem``'s window (Section 3, LMMSE form)."""
    h, law = problem.mesh, problem.law
    idx_obs = lattice_disk(problem.radius + TRANSFORM_MARGIN * h, h)
    idx_in = lattice_disk(problem.radius, h)
    idx_out = lattice_disk(problem.eval_radius + TRANSFORM_MARGIN * h, h)
    idx_eval = lattice_disk(problem.eval_radius, h)
    b2 = problem.blur**2
    sigma = problem.noise_sigma
    signal = lattice_covariance(law, idx_obs, idx_obs, h, 2 * b2)
    sel_in = _positions(idx_obs, idx_in)
    cross = lattice_covariance(law, idx_out, idx_in, h, b2)
    w = lmmse_operator(cross, signal[sel_in][:, sel_in], sigma)
    ev = _positions(idx_out, idx_eval)
    mse = float((law.variance - (w[ev] * cross[ev]).sum(1)).mean() / law.variance)  # C(0) - w_i . c_i
    return OptimalOperator(problem, idx_obs, idx_in, idx_out, idx_eval, signal, sigma**2, w, mse)


def operator_equivariance_error(op: OptimalOperator, element: GroupElement) -> dict[str, float]:
    """Exact expected equivariance error ``e_A(h)`` of the LMMSE operator under ``element`` (module doc).

    Returns ``equivariance_error`` and its two parts, ``error_signal`` (from the clean, smooth part of the
    observation) and ``error_noise`` (from the white noise), which add up to it, plus ``signal_energy`` (the
    denominator per evaluation point, in units of ``C(0)``).
    """
    interp = op.problem.interpolation
    sel_in = _positions(op.index_obs, op.index_in)
    t_in = transform_matrix(element, op.index_obs, op.index_in, interp)  # (in, obs)
    t_out = transform_matrix(element, op.index_out, op.index_eval, interp)  # (eval, out)
    ev = _positions(op.index_out, op.index_eval)
    first = op.operator[ev] @ t_in  # W T_A  (eval, obs)
    second = torch.zeros_like(first)
    second[:, sel_in] = t_out @ op.operator  # T_A W S  (eval, obs)
    delta = first - second
    num_signal = float(((delta @ op.signal) * delta).sum())
    num_noise = op.noise_var * float((delta * delta).sum())
    den = float(((second @ op.signal) * second).sum()) + op.noise_var * float((second * second).sum())
    n = len(op.index_eval)
    return {
        "equivariance_error": (num_signal + num_noise) / den,
        "error_signal": num_signal / den,
        "error_noise": num_noise / den,
        "signal_energy": den / n / op.problem.law.variance,
    }


def optimal_equivariance_error(problem: Restoration, group: str | Group | Iterable[GroupElement]) -> list[dict]:
    """``e_A(h)`` of the optimal operator for every non-identity element of ``group``; one dict per element."""
    elements = get_group(group).non_identity if isinstance(group, str) else group
    if isinstance(elements, Group):
        elements = elements.non_identity
    op = optimal_operator(problem)
    rows = []
    for el in elements:
        rows.append(
            {
                "element": el.name,
                "angle": el.angle,
                "is_grid_exact": el.is_grid_exact,
                **operator_equivariance_error(op, el),
                "mse": op.mse,
                "n_window": len(op.index_in),
            }
        )
    return rows


# ---- symmetry error of the data ----------------------------------------------------------


def covariance_symmetry_error(
    law: FieldLaw, element: GroupElement, radius: float, quadrature_mesh: float | None = None, beta: float = 0.0
) -> float:
    """``eps_cov(A) = ||C - C o A^-1||^2 / ||C||^2`` in L2 over offsets ``|d| <= 2 radius`` (module doc).

    The covariance of ``pi_A r`` is ``C(A^-1 d)``; the integral is a Riemann sum on a fine grid (step
    ``quadrature_mesh``, default ``radius / 16``: five significant digits) of a smooth integrand, independent of
    any restoration mesh.
    """
    return symmetry_errors(law, [element], radius, quadrature_mesh, beta)[element.name]


def symmetry_errors(
    law: FieldLaw,
    group: str | Group | Iterable[GroupElement],
    radius: float,
    quadrature_mesh: float | None = None,
    beta: float = 0.0,
) -> dict[str, float]:
    """:func:`covariance_symmetry_error` for every non-identity element of ``group``, plus ``worst`` and ``mean``."""
    elements = get_group(group) if isinstance(group, str) else group
    elements = [el for el in elements if not el.is_identity]
    step = quadrature_mesh or radius / 16
    pts = lattice_disk(2 * radius, step).to(torch.float64) * step
    c = law.covariance(pts, beta)
    norm = float((c**2).sum())
    out = {el.name: float(((c - law.transformed(el).covariance(pts, beta)) ** 2).sum()) / norm for el in elements}
    values = list(out.values()) or [0.0]
    out["worst"] = max(values)
    out["mean"] = sum(values) / len(values)
    return out


# ---- convolutions: the optimum with a fixed support, and a learned one ----------------------


def disk_convolution(weights: torch.Tensor, index: torch.Tensor) -> nn.Conv2d:
    """A one-channel ``nn.Conv2d`` computing ``out(p) = sum_j weights[j] y(p + index[j])`` (zero padding, same size).

    ``index`` holds lattice offsets ``(x, y)`` (x along columns, y up), as from :func:`lattice_disk`.
    """
    m = int(index.abs().max()) if index.numel() else 0
    kernel = torch.zeros(2 * m + 1, 2 * m + 1, dtype=torch.float64)
    kernel[m - index[:, 1], m + index[:, 0]] = weights.to(torch.float64)
    conv = nn.Conv2d(1, 1, 2 * m + 1, padding=m, bias=False).to(torch.float64)
    with torch.no_grad():
        conv.weight.copy_(kernel[None, None])
    conv.requires_grad_(False)
    return conv


def wiener_convolution(problem: Restoration, kernel_radius: float) -> nn.Conv2d:
    """The optimal (LMMSE) convolution with support the disk of radius ``kernel_radius``: the centre row of ``W``.

    It is the limit of :func:`fit_linear_convolution` with unlimited training data (stationary field).
    """
    h = problem.mesh
    index = lattice_disk(kernel_radius, h)
    origin = torch.zeros(1, 2, dtype=torch.long)
    cross = lattice_covariance(problem.law, origin, index, h, problem.blur**2)
    cov = lattice_covariance(problem.law, index, index, h, 2 * problem.blur**2)
    return disk_convolution(lmmse_operator(cross, cov, problem.noise_sigma)[0], index)


def fit_linear_convolution(
    noisy: torch.Tensor,
    clean: torch.Tensor,
    index: torch.Tensor,
    samples: int,
    generator: torch.Generator | None = None,
) -> nn.Conv2d:
    """Learn a disk-supported convolution by least squares on ``samples`` random pixels of training pairs.

    ``noisy``, ``clean``: ``(N, 1, H, W)``; ``index``: the kernel's lattice offsets. The result minimises the
    empirical squared loss over all such convolutions (the empirical risk minimiser, a finite-data estimate of
    :func:`wiener_convolution`).
    """
    n, _, height, width = noisy.shape
    m = int(index.abs().max())
    if height <= 2 * m or width <= 2 * m:
        raise UsageError(f"training images {height}x{width} are too small for a kernel of radius {m} pixels")
    g = generator or torch.Generator().manual_seed(0)
    img = torch.randint(0, n, (samples,), generator=g)
    row = torch.randint(m, height - m, (samples,), generator=g)
    col = torch.randint(m, width - m, (samples,), generator=g)
    design = noisy[img[:, None], 0, row[:, None] - index[None, :, 1], col[:, None] + index[None, :, 0]]
    target = clean[img, 0, row, col]
    weights = torch.linalg.lstsq(design.to(torch.float64), target.to(torch.float64)[:, None]).solution[:, 0]
    return disk_convolution(weights, index)


# ---- fitting the bound --------------------------------------------------------------------


def fit_bound(mesh, eps, error) -> tuple[float, float]:
    """Non-negative least squares fit ``error ~ a h^2 + b eps`` on relative residuals (Theorem 3.6's form).

    Minimises ``sum ((a h_i^2 + b eps_i) / e_i - 1)^2`` over ``a, b >= 0``, so every decade of the error weighs
    the same. Returns ``(a, b)``.
    """
    h2, eps, err = (np.asarray(v, dtype=float) for v in (np.square(mesh), eps, error))
    design = np.stack([h2, eps], axis=1) / err[:, None]
    coef, _ = nnls(design, np.ones_like(err))
    return float(coef[0]), float(coef[1])


def envelope_bound(mesh, eps, error) -> tuple[float, float]:
    """The tightest ``a h^2 + b eps`` (``a, b >= 0``) lying on or above every point: a linear programme.

    Minimises ``sum (a h_i^2 + b eps_i) / e_i`` subject to ``a h_i^2 + b eps_i >= e_i``. Returns ``(a, b)``.
    """
    h2, eps, err = (np.asarray(v, dtype=float) for v in (np.square(mesh), eps, error))
    design = np.stack([h2, eps], axis=1)
    res = linprog((design / err[:, None]).sum(0), A_ub=-design, b_ub=-err, bounds=[(0, None), (0, None)])
    if not res.success:
        raise UsageError(f"no bound a h^2 + b eps fits these points: {res.message}")
    return float(res.x[0]), float(res.x[1])


def loglog_slope(mesh, error) -> tuple[float, float]:
    """Least-squares slope and intercept of ``log error`` against ``log h``."""
    slope, intercept = np.polyfit(np.log(np.asarray(mesh, dtype=float)), np.log(np.asarray(error, dtype=float)), 1)
    return float(slope), float(intercept)


__all__ = [
    "FieldLaw",
    "TransformedLaw",
    "Restoration",
    "OptimalOperator",
    "lattice_disk",
    "lattice_covariance",
    "window_covariance",
    "lmmse_operator",
    "transform_matrix",
    "optimal_operator",
    "operator_equivariance_error",
    "optimal_equivariance_error",
    "covariance_symmetry_error",
    "symmetry_errors",
    "disk_convolution",
    "wiener_convolution",
    "fit_linear_convolution",
    "fit_bound",
    "envelope_bound",
    "loglog_slope",
    "NOISE_MODELS",
    "LAW_FAMILIES",
    "ORIENTATION_NODES",
]
