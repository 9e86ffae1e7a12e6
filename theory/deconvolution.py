"""Theorem 3.6 in its own setting: Riemann-sum deconvolution of atom images, exact-sampling transforms.

Everything the theorem needs is closed form here, so its constants are computed, not fitted.

**Images** (supplement SM5.2). Two families (``FAMILIES``): finite-smoothness compact bumps (:mod:`theory.bumps`) and
analytic Gaussian atoms, described here. An :class:`AtomImage` is
``r(x) = sum_j c_j exp(-1/2 (x-p_j)^T S_j^-1 (x-p_j))``, a
sum of (an)isotropic Gaussian atoms ``S_j = R(theta_j) diag(l_j^2, s_j^2) R(theta_j)^T``. Its transform
``pi_A r(x) = r(A^-1 x)`` is again an atom sum (centres ``A p``, covariances ``A S A^T``), so ``pi~_A Y`` is sampled
*exactly* at any mesh (``Y_ij = r(A^-1 x_ij)``), never interpolated. Blur by the normalised Gaussian kernel
``k = N(0, sigma_k^2 I)`` is closed form too (``k * g`` is the atom with ``S + sigma_k^2 I``), so the observation
``r_hat = k * r`` is sampled exactly as well.

**Tails.** Gaussians are not compactly supported; SM5.2 asks for ``r = 0`` beyond ``D_r``, ``k = 0`` beyond ``D_k``,
``k_R = 0`` beyond ``D_R``. Every support radius is ``centre + tau * (largest standard deviation)`` with
``tau = sqrt(2 ln(1/tail))``: beyond it an atom is below ``tail`` times its peak and the mass of a normalised
isotropic kernel outside the radius is exactly ``tail`` (``exp(-D^2/2 sigma^2)``). The discrete problem truncates
at these radii (kernel stencils are the lattice points in the disk ``D_k``/``D_R``; unknowns the mesh points in the
disk ``D_r``); the neglected parts are ``O(tail)`` in value, ``O(tail^2)`` in squared norms (default ``1e-10``).

**Objective** (SM5.25, SM5.27). Per sample, with the kernel known (non-blind, ``Lambda = {k}``)::

    F~[r] = h^2 sum_ij (r_hat(x_ij) - h^2 sum_uv k(t_uv) r(x_ij - t_uv))^2          data term (Riemann sums)
          + lam h^2 sum_ij (h^2 sum_uv k_R(t_uv) r(x_ij - t_uv))^2                   R: smoothness, k_R a
          + mu  h^2 sum_ij (r(x_ij) - m(x_ij))^2                                      DoG band-pass, + template

The outer sum runs over every lattice point where the residual can be nonzero (the ``4 (D_r + D_k)^2`` area of
SM5.16), so the continuous objective is O(2)-invariant apart from the template term. ``F~`` is a strictly convex
quadratic: the optimum solves ``(h^4 K^T K + lam h^4 K_R^T K_R + mu I) r = h^2 K^T y + mu m`` on the disk mesh; we
solve it by batched conjugate gradients with FFT convolutions (:func:`solve`) to a relative KKT residual ``tol``.
Quadratic growth (SM5.26) holds with exactly ``mu``: ``F[r] - F[r*] >= mu ||r - r*||^2`` (the Hessian's spectrum
has infimum ``mu``), the same in the discrete problem with the ``h^2``-weighted norm.

*Why non-blind.* SM5.25 minimises over ``k in Lambda``; the proof handles that min only through Lemma SM5.3 (the
data terms are uniformly close for every fixed ``k``), so every step holds verbatim for ``Lambda = {k}``. The blind
problem is bilinear (non-convex): "solved to tolerance" would be a local optimum without certificate and quadratic
growth would only be local. With a known isotropic kernel the blind problem's kernel symmetry (Lemma 3.1) is exact.

**eps and Omega_eps** (Theorem 3.3, SM5.37). The data distribution ``D_t``: ``r_n = s_n + t a`` with ``s_n`` a sum of
atoms with random signs, uniformly random orientations and centres uniform in a disk (an O(2)-invariant, zero-mean
law), and ``a`` one fixed off-centre atom. ``t = 0`` is exactly symmetric (as a distribution, not per image); for
``t > 0`` the mean ``m = E r_n = t a`` is not invariant. "What the data distribution allows" enters the objective as
the template ``m`` (the Omega_eps constraint in penalty form; Gaussian prior with the data's mean). eps in squared
units, ``eps_A = 2 mu t^2 ||a - pi_A a||^2``, and the continuum error ``mu^2 t^2 ||H^-1 (a - pi_A a)||^2`` are in
:mod:`theory.continuum` (docs/theory.md, section 2.2).

**Constants** (SM5.2, SM5.52, docs/theory.md, 2.2). ``F1, G1, H1`` must bound ``|.|``, ``|grad .|`` and the operator
norm of the Hessian of ``r``, ``r_hat`` *and* of the optimum (SM5.40-5.44 apply them to ``Phi_bar``). The optimum's
Fourier transform is ``(|k^|^2 r^ + mu m^)/(|k^|^2 + mu + lam |k_R^|^2)``, so ``|r*^| <= |r^| + |m^|`` and
``sup|d^alpha r*| <= (2 pi)^-2 int |w|^|alpha| (|r^| + |m^|) dw``; :func:`fourier_bounds` evaluates these integrals
per atom (closed form for isotropic atoms, a one-dimensional angular integral for anisotropic ones), summed over
atoms (triangle inequality). They dominate the exact sups of ``r`` and ``r_hat``. The kernel bounds are exact sups:
``k``: ``F2 = 1/(2 pi s^2)``, ``G2 = e^-1/2 / (2 pi s^3)``, ``H2 = 1/(2 pi s^4)``;
``k_R = N(0, s_R^2) - N(0, 4 s_R^2)``: the sum of the two Gaussians' sups (triangle inequality).
Then (:func:`theorem_constants`)
``C_reg = H3 F1 + 2 G1 G3 + 2 F3 H1``, ``C0 = F1 H2 + F2 H1 + 2 G1 G2``,
``C_bar = 2 (1 + 4 D_k^2 F2) [4 C0 D_k^2 F1 + (G1^2 + F1 H1)(1 + 4 D_k^2 F2)]``, ``C1 = 4 C_reg / mu``,
``C2 = 4 C_bar / mu + 8 G1^2 + 8 F1 H1`` and the bound ``[C1 (D_r + D_R)^2 + C2 (D_r + D_k)^2] h^2 + (2/mu) eps``.

**Error** (SM5.49-5.52). ``(1/N) sum_n ||Phi~(pi~_A Y_hat_n) - pi~_A Phi~(Y_hat_n)||_F^2`` with
``||Y||_F^2 = h^2 sum Y_ij^2``. ``pi~_A Y_hat`` is exact sampling of ``pi_A r_hat``. ``pi~_A Phi~(Y_hat)`` needs the
optimum off the mesh: the semi-discrete objective (SM5.1) sees ``r`` only on the lattice, so its minimiser is fixed
on the mesh only; we take as ``Phi_bar`` the band-limited (trigonometric) interpolant of the mesh optimum
(:func:`trig_interpolate`), smooth and exact at the mesh points. Quarter turns and axis flips map the mesh onto
itself: there both transforms are exact index permutations (:func:`transform_array`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import integrate

from symmetry.groups import GroupElement, get_group
from theory import bumps

DEFAULT_TAIL = 1e-10
FAMILIES = ("gaussian", "bump")
"""Image and kernel families: analytic Gaussians (the "smooth" row), finite-smoothness bumps (:mod:`theory.bumps`)."""


def tail_factor(tail: float) -> float:
    """``tau`` with ``exp(-tau^2 / 2) = tail``: support radius in standard deviations."""
    return math.sqrt(2.0 * math.log(1.0 / tail))


# ---- analytic images -------------------------------------------------------------------------------------------


def group_elements(group: str) -> list[GroupElement]:
    """The non-identity elements of ``group`` (:func:`symmetry.groups.get_group`: ``rot4``, ``rot8``, ``dih4``,
    ``so2:K``, ...). ``so2:K`` with ``K`` odd has no grid-exact element besides the identity."""
    return list(get_group(group).non_identity)


def element_matrix(element: GroupElement) -> np.ndarray:
    """``A`` as a float64 array (quarter turns and axis flips with exact integer entries)."""
    return np.asarray(element.matrix, dtype=np.float64)


@dataclass(frozen=True)
class AtomImage:
    """``r(x) = sum_j c_j exp(-1/2 (x - p_j)^T S_j^-1 (x - p_j))``: amplitudes ``(J,)``, centres ``(J, 2)``, covariances
    ``(J, 2, 2)``. Coordinates are ``(x, y)`` physical units."""

    amplitudes: np.ndarray
    centres: np.ndarray
    covariances: np.ndarray

    @staticmethod
    def atoms(amplitudes, centres, long, short, angles) -> AtomImage:
        """Oriented atoms: standard deviations ``long`` along ``angles``, ``short`` across."""
        amp = np.atleast_1d(np.asarray(amplitudes, float))
        ang = np.broadcast_to(np.asarray(angles, float), amp.shape)
        lo = np.broadcast_to(np.asarray(long, float), amp.shape)
        sh = np.broadcast_to(np.asarray(short, float), amp.shape)
        rot = np.stack([np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], -2)
        cov = rot @ (np.stack([lo**2, sh**2], -1)[..., None] * np.swapaxes(rot, -1, -2))
        return AtomImage(amp, np.asarray(centres, float).reshape(-1, 2), cov)

    def __add__(self, other: AtomImage) -> AtomImage:
        return AtomImage(
            np.concatenate([self.amplitudes, other.amplitudes]),
            np.concatenate([self.centres, other.centres]),
            np.concatenate([self.covariances, other.covariances]),
        )

    def scaled(self, factor: float) -> AtomImage:
        return AtomImage(self.amplitudes * factor, self.centres, self.covariances)

    def evaluate(self, points: np.ndarray) -> np.ndarray:
        """``r`` at points ``(..., 2)``."""
        pts = np.asarray(points, float)
        shape = pts.shape[:-1]
        d = pts.reshape(-1, 1, 2) - self.centres[None]  # (Q, J, 2)
        prec = np.linalg.inv(self.covariances)  # (J, 2, 2)
        q = np.einsum("qja,jab,qjb->qj", d, prec, d)
        return (np.exp(-0.5 * q) @ self.amplitudes).reshape(shape)

    def transformed(self, matrix: np.ndarray) -> AtomImage:
        """``pi_A r = r(A^-1 .)``: centres ``A p``, covariances ``A S A^T``."""
        a = np.asarray(matrix, float)
        return AtomImage(self.amplitudes, self.centres @ a.T, a @ self.covariances @ a.T)

    def blurred(self, sigma: float) -> AtomImage:
        """``k * r`` for the normalised Gaussian ``k = N(0, sigma^2 I)`` (closed form)."""
        cov = self.covariances + sigma**2 * np.eye(2)
        gain = np.sqrt(np.linalg.det(self.covariances) / np.linalg.det(cov))
        return AtomImage(self.amplitudes * gain, self.centres, cov)

    def fourier(self, w: np.ndarray) -> np.ndarray:
        """``r^(w) = int r(x) e^{-i w.x} dx = sum_j c_j 2 pi sqrt(det S_j) e^{-w'S_j w/2 - i w.p_j}``."""
        w = np.asarray(w, float)
        quad = np.einsum("...a,jab,...b->...j", w, self.covariances, w)
        gain = 2 * math.pi * np.sqrt(np.linalg.det(self.covariances)) * self.amplitudes
        phase = np.einsum("...a,ja->...j", w, self.centres)
        return (np.exp(-0.5 * quad - 1j * phase) * gain).sum(-1)

    def inner(self, other: AtomImage) -> float:
        """``<r, r'>_{L2}`` in closed form."""
        s = self.covariances[:, None] + other.covariances[None]  # (J, J', 2, 2)
        pi = np.linalg.inv(self.covariances)[:, None] + np.linalg.inv(other.covariances)[None]
        d = self.centres[:, None] - other.centres[None]
        q = np.einsum("ija,ijab,ijb->ij", d, np.linalg.inv(s), d)
        g = 2 * math.pi / np.sqrt(np.linalg.det(pi)) * np.exp(-0.5 * q)
        return float(self.amplitudes @ g @ other.amplitudes)

    def support_radius(self, tail: float = DEFAULT_TAIL) -> float:
        """``max_j |p_j| + tau * sqrt(largest eigenvalue of S_j)``: beyond it every atom is below ``tail`` x peak."""
        top = np.sqrt(np.linalg.eigvalsh(self.covariances)[:, -1])
        return float(np.max(np.linalg.norm(self.centres, axis=1) + tail_factor(tail) * top))


def fourier_integrals(cov: np.ndarray) -> tuple[float, float, float]:
    """``(2 pi)^-2 int |w|^a |g^(w)| dw`` for ``a = 0, 1, 2`` and a unit-amplitude atom of covariance ``cov``.

    ``|g^(w)| = 2 pi sqrt(det S) exp(-w^T S w / 2)``; in polar coordinates the radial integral is
    ``Gamma(1 + a/2) 2^(a/2) q(phi)^-(1 + a/2)``, ``q(phi) = u^T S u``, leaving an angular integral (closed form for
    a = 0: 1 and a = 2: ``1/l^2 + 1/s^2``; quadrature for a = 1, closed form ``sqrt(pi/2)/sigma`` if isotropic).
    """
    ev = np.linalg.eigvalsh(cov)
    lo2, hi2 = float(ev[0]), float(ev[1])
    i2 = 1 / lo2 + 1 / hi2
    if math.isclose(lo2, hi2, rel_tol=1e-14):
        return 1.0, math.sqrt(math.pi / 2) / math.sqrt(lo2), i2

    def q(phi: float) -> float:
        return hi2 * math.cos(phi) ** 2 + lo2 * math.sin(phi) ** 2

    ang, _ = integrate.quad(lambda p: q(p) ** -1.5, 0, math.pi / 2, epsabs=0, epsrel=1e-13)
    i1 = math.sqrt(lo2 * hi2) / (2 * math.pi) * math.gamma(1.5) * math.sqrt(2) * 4 * ang
    return 1.0, i1, i2


def fourier_bounds(image: AtomImage) -> np.ndarray:
    """``(F, G, H)``: bounds on ``sup|r|``, ``sup|grad r|``, ``sup ||hess r||`` by ``sum_j |c_j| I_a(S_j)``."""
    per = np.array([fourier_integrals(c) for c in image.covariances])  # (J, 3)
    return np.abs(image.amplitudes) @ per


def exact_atom_sups(amplitude: float, cov: np.ndarray) -> tuple[float, float, float]:
    """Exact ``sup|g|, sup|grad g|, sup||hess g||`` of one atom: ``|c|``, ``|c| e^-1/2 / s``, ``|c| / s^2``
    (``s`` the short standard deviation; the Hessian's norm peaks at the centre)."""
    s = math.sqrt(float(np.linalg.eigvalsh(cov)[0]))
    c = abs(amplitude)
    return c, c * math.exp(-0.5) / s, c / s**2


# ---- the data distribution -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AtomLaw:
    """``r = s + t a``: ``s`` has ``atoms`` oriented atoms with random signs, uniform orientations, centres uniform
    in the disk of radius ``spread`` (an O(2)-invariant zero-mean law); ``a`` is one fixed oriented atom."""

    atoms: int = 6
    spread: float = 1.2
    long: float = 0.35
    short: float = 0.2
    asym_centre: tuple[float, float] = (0.6, 0.3)
    asym_long: float = 0.35
    asym_short: float = 0.15
    asym_angle: float = 0.4

    def symmetric_part(self, rng: np.random.Generator) -> AtomImage:
        signs = rng.choice([-1.0, 1.0], self.atoms)
        radius = self.spread * np.sqrt(rng.uniform(0, 1, self.atoms))
        phi = rng.uniform(0, 2 * math.pi, self.atoms)
        centres = np.stack([radius * np.cos(phi), radius * np.sin(phi)], -1)
        return AtomImage.atoms(signs, centres, self.long, self.short, rng.uniform(0, math.pi, self.atoms))

    def asymmetric_part(self) -> AtomImage:
        return AtomImage.atoms([1.0], [self.asym_centre], self.asym_long, self.asym_short, [self.asym_angle])

    def sample(self, n: int, rng: np.random.Generator) -> list[AtomImage]:
        """``n`` symmetric parts ``s_n`` (add ``t a`` for the image at asymmetry ``t``)."""
        return [self.symmetric_part(rng) for _ in range(n)]


# ---- the discrete problem --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Deconvolution:
    """The per-sample objective: blur ``k``, regulariser ``lam ||k_R * r||^2 + mu ||r - m||^2`` with
    ``k_R = N(0, reg^2) - N(0, 4 reg^2)`` (a smooth band-pass), Gaussian supports cut at ``tail``.

    ``family`` ``"gaussian"``: ``k = N(0, blur^2)`` (analytic); ``"bump"``: ``k`` the normalised bump of radius
    ``blur`` and smoothness ``smoothness`` (:mod:`theory.bumps`: compact support, bounded Hessian, no more)."""

    blur: float = 0.15
    mu: float = 0.2
    lam: float = 0.02
    reg: float = 0.15
    tail: float = DEFAULT_TAIL
    family: str = "gaussian"
    smoothness: int = 3

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown image family {self.family!r}; use one of {', '.join(FAMILIES)}")

    @property
    def support_k(self) -> float:
        return self.blur if self.family == "bump" else tail_factor(self.tail) * self.blur

    def kernel_transform(self, w: np.ndarray) -> np.ndarray:
        """``k^(|w|)`` (the Riemann sums' limit; the ``tail`` cut changes it by ``O(tail)``)."""
        if self.family == "bump":
            return bumps.profile_transform(w, self.blur, self.smoothness) / bumps.kernel_mass(
                self.blur, self.smoothness
            )
        return np.exp(-0.5 * (self.blur * np.asarray(w, float)) ** 2)

    def reg_transform(self, w: np.ndarray) -> np.ndarray:
        """``k_R^(|w|)``."""
        w2 = np.asarray(w, float) ** 2
        return np.exp(-0.5 * self.reg**2 * w2) - np.exp(-2.0 * self.reg**2 * w2)

    def hessian(self, w: np.ndarray) -> np.ndarray:
        """The continuum objective's Hessian (halved) in Fourier: ``H = |k^|^2 + mu + lam |k_R^|^2 >= mu``."""
        return self.kernel_transform(w) ** 2 + self.mu + self.lam * self.reg_transform(w) ** 2

    @property
    def support_reg(self) -> float:
        return tail_factor(self.tail) * 2 * self.reg

    def kernel(self, t2: np.ndarray) -> np.ndarray:
        """``k`` at squared radii, zero beyond ``D_k``."""
        if self.family == "bump":
            return bumps.profile(np.sqrt(t2), self.blur, self.smoothness) / bumps.kernel_mass(
                self.blur, self.smoothness
            )
        k = np.exp(-t2 / (2 * self.blur**2)) / (2 * math.pi * self.blur**2)
        return np.where(t2 <= self.support_k**2, k, 0.0)

    def reg_kernel(self, t2: np.ndarray) -> np.ndarray:
        """``k_R`` at squared radii, zero beyond ``D_R``."""
        s1, s2 = self.reg**2, 4 * self.reg**2
        k = np.exp(-t2 / (2 * s1)) / (2 * math.pi * s1) - np.exp(-t2 / (2 * s2)) / (2 * math.pi * s2)
        return np.where(t2 <= self.support_reg**2, k, 0.0)

    def kernel_bounds(self) -> dict[str, float]:
        """``F2, G2, H2`` (exact sups of ``k``) and ``F3, G3, H3`` (sums of the two Gaussians' sups)."""
        s, r1, r2 = self.blur, self.reg, 2 * self.reg
        e = math.exp(-0.5)
        if self.family == "bump":
            k = bumps.kernel_sups(s, self.smoothness)
        else:
            k = {"F2": 1 / (2 * math.pi * s**2), "G2": e / (2 * math.pi * s**3), "H2": 1 / (2 * math.pi * s**4)}
        return {
            **k,
            "F3": (1 / r1**2 + 1 / r2**2) / (2 * math.pi),
            "G3": e * (1 / r1**3 + 1 / r2**3) / (2 * math.pi),
            "H3": (1 / r1**4 + 1 / r2**4) / (2 * math.pi),
        }


@dataclass
class Mesh:
    """The square mesh of step ``h`` covering the disk of radius ``radius``: ``m = 2 ceil(radius/h) + 1`` points a
    side (odd, the origin a node), ``x_ij = (t_i, t_j)``; the unknowns are the nodes in the disk."""

    h: float
    radius: float
    m: int = field(init=False)
    t: np.ndarray = field(init=False)

    def __post_init__(self):
        half = math.ceil(self.radius / self.h - 1e-9)
        self.m = 2 * half + 1
        self.t = (np.arange(self.m) - half) * self.h

    @property
    def points(self) -> np.ndarray:
        """``(m, m, 2)``: ``points[i, j] = (t_i, t_j)``."""
        x, y = np.meshgrid(self.t, self.t, indexing="ij")
        return np.stack([x, y], -1)

    @property
    def mask(self) -> np.ndarray:
        return (self.points**2).sum(-1) <= self.radius**2 + 1e-12

    def sample(self, image: AtomImage, matrix: np.ndarray | None = None) -> np.ndarray:
        """Exact sampling ``Y_ij = r(A^-1 x_ij)`` (``A`` orthogonal: ``A^-1 = A^T``)."""
        pts = self.points if matrix is None else self.points @ np.asarray(matrix, float)  # rows: A^T x
        return image.evaluate(pts)


def norm2(y: np.ndarray, h: float) -> np.ndarray:
    """``||Y||_F^2 = h^2 sum Y_ij^2`` over the last two axes."""
    return h**2 * (y**2).sum(axis=(-2, -1))


def transform_array(y: np.ndarray, element: GroupElement, mesh: Mesh, device=None) -> np.ndarray:
    """``pi~_A`` of mesh arrays ``(..., m, m)``: an exact index permutation when ``A`` maps the mesh to itself
    (:attr:`symmetry.groups.GroupElement.is_grid_exact`), otherwise the trigonometric interpolant sampled at
    ``A^-1 x_ij`` (on ``device`` when given)."""
    a = element_matrix(element)
    if element.is_grid_exact:
        half = (mesh.m - 1) // 2
        idx = np.rint(mesh.points @ a / mesh.h).astype(int) + half  # A^-1 x_ij in index units
        return y[..., idx[..., 0], idx[..., 1]]
    return trig_interpolate(y, mesh, mesh.points @ a, device)


def _dirichlet(u: np.ndarray, m: int, length: float) -> np.ndarray:
    """Periodic Dirichlet kernel of ``m`` (odd) nodes on a period ``length``: 1 at ``u = 0``, 0 at other nodes."""
    s = np.sin(math.pi * u / length)
    small = np.abs(s) < 1e-13
    out = np.sin(math.pi * m * u / length) / (m * np.where(small, 1.0, s))
    return np.where(small, 1.0, out)


def trig_interpolate(y: np.ndarray, mesh: Mesh, points: np.ndarray, device=None) -> np.ndarray:
    """The band-limited interpolant of mesh arrays ``(..., m, m)`` (periodic on the ``m h`` box) at ``points``.

    ``device``: a torch device for the ``O(m^4)`` contraction (float64); None uses NumPy."""
    length = mesh.m * mesh.h
    pts = points.reshape(-1, 2)
    dx = _dirichlet(pts[:, :1] - mesh.t[None], mesh.m, length)  # (P, m)
    dy = _dirichlet(pts[:, 1:] - mesh.t[None], mesh.m, length)
    lead = y.shape[:-2]
    flat = y.reshape(-1, mesh.m, mesh.m)
    if device is not None:
        dx_t, flat_t, dy_t = (torch.as_tensor(v, dtype=torch.float64, device=device) for v in (dx, flat, dy))
        out = torch.einsum("pi,bij,pj->bp", dx_t, flat_t, dy_t).cpu().numpy()
    else:
        out = np.einsum("pi,bij,pj->bp", dx, flat, dy, optimize=True)
    return out.reshape(*lead, *points.shape[:-1])


def spectral_sups(y: np.ndarray, mesh: Mesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``max |Y|``, ``max |grad|`` and ``max ||hess||`` of the trigonometric interpolant at the mesh nodes."""
    w = 2 * math.pi * np.fft.fftfreq(mesh.m, d=mesh.h)
    f = np.fft.fft2(y)
    wx, wy = w[:, None], w[None, :]

    def d(mult):
        return np.real(np.fft.ifft2(f * mult))

    gx, gy = d(1j * wx), d(1j * wy)
    hxx, hyy, hxy = d(-(wx**2) + 0 * wy), d(-(wy**2) + 0 * wx), d(-wx * wy)
    grad = np.sqrt(gx**2 + gy**2)
    hess = np.abs(hxx + hyy) / 2 + np.sqrt((hxx - hyy) ** 2 / 4 + hxy**2)
    ax = (-2, -1)
    return np.abs(y).max(ax), grad.max(ax), hess.max(ax)


class Solver:
    """The normal equations of ``F~`` on one mesh, applied with FFT convolutions (batched over images)."""

    def __init__(self, problem: Deconvolution, mesh: Mesh):
        self.problem, self.mesh = problem, mesh
        h, m = mesh.h, mesh.m
        reach = math.ceil(max(problem.support_k, problem.support_reg) / h)
        self.n = _fast_len(m + 4 * reach + 1)
        off = np.fft.fftfreq(self.n, d=1.0 / self.n) * h  # wrapped lattice offsets
        t2 = off[:, None] ** 2 + off[None, :] ** 2
        self.k_hat = np.real(np.fft.rfft2(problem.kernel(t2)))  # symmetric kernels: real transfer functions
        self.kr_hat = np.real(np.fft.rfft2(problem.reg_kernel(t2)))
        self.normal_hat = h**4 * (self.k_hat**2 + problem.lam * self.kr_hat**2)
        self.mask = mesh.mask

    def _conv(self, x: np.ndarray, transfer: np.ndarray) -> np.ndarray:
        m = self.mesh.m
        pad = np.zeros((*x.shape[:-2], self.n, self.n))
        pad[..., :m, :m] = x
        return np.fft.irfft2(np.fft.rfft2(pad) * transfer, s=(self.n, self.n))[..., :m, :m]

    def apply(self, r: np.ndarray) -> np.ndarray:
        """``(h^4 K^T K + lam h^4 K_R^T K_R + mu I) r`` restricted to the disk."""
        return self.mask * self._conv(r, self.normal_hat) + self.problem.mu * r

    def rhs(self, observed: np.ndarray, template: np.ndarray) -> np.ndarray:
        """``h^2 K^T y + mu m`` on the disk (``y`` zero beyond the mesh: ``r_hat`` is below ``tail`` there)."""
        return self.mask * (self.mesh.h**2 * self._conv(observed, self.k_hat) + self.problem.mu * template)

    def objective(self, r: np.ndarray, observed: np.ndarray, template: np.ndarray) -> np.ndarray:
        """``F~[r]`` (SM5.27 with the regulariser above), per image; the data term over the whole lattice."""
        h, m, n = self.mesh.h, self.mesh.m, self.n

        def padded(x):
            out = np.zeros((*x.shape[:-2], n, n))
            out[..., :m, :m] = x
            return out

        fr = np.fft.rfft2(padded(self.mask * r))
        blurred = np.fft.irfft2(fr * self.k_hat, s=(n, n))
        smooth = np.fft.irfft2(fr * self.kr_hat, s=(n, n))
        data = norm2(padded(observed) - h**2 * blurred, h)
        prior = self.problem.mu * norm2(self.mask * (r - template), h)
        return data + self.problem.lam * norm2(h**2 * smooth, h) + prior

    def solve(self, observed: np.ndarray, template: np.ndarray, tol: float = 1e-13, max_iter: int = 2000):
        """Batched conjugate gradients from zero; returns ``(r, relative KKT residual per image, iterations)``."""
        b = self.rhs(observed, template)
        x = np.zeros_like(b)
        r = b.copy()
        p = r.copy()
        rr = (r**2).sum((-2, -1))
        bb = np.maximum((b**2).sum((-2, -1)), 1e-300)
        it = 0
        while it < max_iter and np.any(rr > tol**2 * bb):
            ap = self.apply(p)
            alpha = rr / np.maximum((p * ap).sum((-2, -1)), 1e-300)
            x += alpha[..., None, None] * p
            r -= alpha[..., None, None] * ap
            new = (r**2).sum((-2, -1))
            p = r + (new / np.maximum(rr, 1e-300))[..., None, None] * p
            rr = new
            it += 1
        kkt = np.sqrt(((b - self.apply(x)) ** 2).sum((-2, -1)) / bb)
        return x, kkt, it


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast FFT sizes)."""
    best = 1 << (n - 1).bit_length()
    p5 = 1
    while p5 <= best:
        p35 = p5
        while p35 <= best:
            p = p35
            while p < n:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


# ---- constants and eps -----------------------------------------------------------------------------------------


def image_bounds(parts: list, asym, t: float) -> dict[str, float]:
    """``F1, G1, H1`` over the dataset ``r_n = s_n + t a``, their blurred observations and the optima:
    ``max_n`` of the Fourier-L1 bounds of ``|r_n^| + |m^|`` (``m = t a``; Gaussian or bump atoms)."""
    bounds = bumps.bump_bounds if isinstance(asym, bumps.BumpImage) else fourier_bounds
    fa = bounds(asym)
    best = np.max([bounds(s) for s in parts], axis=0) + 2 * abs(t) * fa
    return {"F1": float(best[0]), "G1": float(best[1]), "H1": float(best[2])}


def theorem_constants(bounds: dict[str, float], problem: Deconvolution, radius: float) -> dict[str, float]:
    """``C_reg, C0, C_bar, C1, C2``, ``a = C1 (D_r + D_R)^2 + C2 (D_r + D_k)^2`` and ``b = 2/mu`` (SM5.52)."""
    c = {**bounds, **problem.kernel_bounds()}
    f1, g1, h1 = c["F1"], c["G1"], c["H1"]
    dk, dr_reg, mu = problem.support_k, problem.support_reg, problem.mu
    c_reg = c["H3"] * f1 + 2 * g1 * c["G3"] + 2 * c["F3"] * h1
    c0 = f1 * c["H2"] + c["F2"] * h1 + 2 * g1 * c["G2"]
    q = 1 + 4 * dk**2 * c["F2"]
    c_bar = 2 * q * (4 * c0 * dk**2 * f1 + (g1**2 + f1 * h1) * q)
    c1 = 4 * c_reg / mu
    c2 = 4 * c_bar / mu + 8 * g1**2 + 8 * f1 * h1
    a = c1 * (radius + dr_reg) ** 2 + c2 * (radius + dk) ** 2
    return {**c, "C_reg": c_reg, "C0": c0, "C_bar": c_bar, "C1": c1, "C2": c2, "D_r": radius, "D_k": dk,
            "D_R": dr_reg, "a": a, "b": 2 / mu}  # fmt: skip


__all__ = [
    "AtomImage",
    "AtomLaw",
    "Deconvolution",
    "Mesh",
    "Solver",
    "exact_atom_sups",
    "fourier_bounds",
    "fourier_integrals",
    "group_elements",
    "image_bounds",
    "norm2",
    "element_matrix",
    "spectral_sups",
    "tail_factor",
    "theorem_constants",
    "transform_array",
    "trig_interpolate",
]
