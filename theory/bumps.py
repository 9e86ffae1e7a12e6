"""Atoms and blur kernels of finite smoothness with compact support: the theorem's regularity class (SM5.2).

Gaussians are analytic, so Riemann sums of them converge faster than any power of ``h`` and every rate passes the
test "error <= a h^2". Here every function has a bounded Hessian and no more: the profile

    b(x) = (1 - |x|^2 / R^2)_+^q        (q = 3: b, grad b and hess b continuous, third derivatives jump at |x| = R)

is an *atom* (radius ``R``) and, normalised to unit mass, the blur kernel ``k = (q + 1) / (pi R_k^2) b_{R_k}``
(radius ``R_k``, support exactly ``D_k = R_k``). An image is ``r(x) = sum_j c_j b(x - p_j)`` (radial atoms, so
``pi_A r`` has centres ``A p_j`` and is sampled exactly), its observation ``r_hat = k * r`` is the sum of the
radial profiles ``f = k * b``, computed once per ``(R, R_k, q)`` to rounding (:func:`blurred_profile`: the angular
integral in closed form, the radial one by Gauss-Legendre between the profile's breakpoints) and read by a cubic
spline on 8001 nodes (error below 1e-12 of the peak).

Fourier transforms (Sonine's integral): ``b^(w) = 2 pi R^2 2^q q! J_{q+1}(|w| R) / (|w| R)^{q+1}``, so the
Fourier-L1 bounds ``(2 pi)^-2 int |w|^a |b^| dw = R^-a 2^q q! int_0^inf u^(a-q) |J_{q+1}(u)| du`` are finite for
``a <= 2`` when ``q >= 3`` (:func:`fourier_integrals`; the tail beyond ``u = U`` is bounded by the Bessel envelope
``|J| <= 1.001 sqrt(2 / (pi u))``, valid for ``u >> q``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import integrate, special
from scipy.interpolate import CubicSpline

TABLE_NODES = 8001


def profile(rho: np.ndarray, radius: float, q: int) -> np.ndarray:
    """``b(rho) = (1 - rho^2 / R^2)_+^q``."""
    return np.clip(1.0 - (np.asarray(rho, float) / radius) ** 2, 0.0, None) ** q


def profile_transform(w: np.ndarray, radius: float, q: int) -> np.ndarray:
    """``b^(|w|) = 2 pi R^2 2^q q! J_{q+1}(u) / u^{q+1}``, ``u = |w| R`` (``pi R^2 / (q + 1)`` at 0)."""
    u = np.asarray(w, float) * radius
    small = u < 1e-6
    safe = np.where(small, 1.0, u)
    val = 2 * math.pi * radius**2 * 2**q * math.factorial(q) * special.jv(q + 1, safe) / safe ** (q + 1)
    return np.where(small, math.pi * radius**2 / (q + 1), val)


def kernel_mass(radius: float, q: int) -> float:
    """``int b = pi R^2 / (q + 1)``: the blur kernel is ``b / kernel_mass``."""
    return math.pi * radius**2 / (q + 1)


def _angular(rho: float, s: np.ndarray, radius: float, q: int) -> np.ndarray:
    """``int_0^{2 pi} b(|rho e_1 - s e_theta|) d theta`` in closed form: ``(A + B cos theta)_+^q`` expanded."""
    a = 1.0 - (rho**2 + s**2) / radius**2
    b = 2.0 * rho * s / radius**2
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(b > 0, np.clip(-a / np.where(b > 0, b, 1.0), -1.0, 1.0), np.where(a > 0, -1.0, 1.0))
    theta = np.arccos(c)  # integrand positive for |theta| < theta_m
    sin, cos = np.sin(theta), np.cos(theta)
    moments = [theta, sin]  # int_0^theta cos^j
    for j in range(2, q + 1):
        moments.append(cos ** (j - 1) * sin / j + (j - 1) / j * moments[j - 2])
    total = sum(math.comb(q, j) * a ** (q - j) * b**j * moments[j] for j in range(q + 1))
    return 2.0 * total


@lru_cache(maxsize=8)
def blurred_profile(radius: float, kernel_radius: float, q: int) -> CubicSpline:
    """The radial profile of ``k * b`` as a cubic spline on ``[0, R + R_k]`` (zero beyond)."""
    reach = radius + kernel_radius
    rho = np.linspace(0.0, reach, TABLE_NODES)
    nodes, weights = np.polynomial.legendre.leggauss(64)
    mass = kernel_mass(kernel_radius, q)
    values = np.zeros_like(rho)
    for i, r in enumerate(rho):
        cuts = sorted({0.0, kernel_radius, *(c for c in (abs(radius - r), radius + r) if 0 < c < kernel_radius)})
        total = 0.0
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            s = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
            f = profile(s, kernel_radius, q) * s * _angular(r, s, radius, q)
            total += 0.5 * (hi - lo) * float(weights @ f)
        values[i] = total / mass
    return CubicSpline(rho, values, bc_type=((1, 0.0), (1, 0.0)))


@lru_cache(maxsize=16)
def fourier_integrals(radius: float, q: int, top: float = 2.0e4) -> tuple[float, float, float]:
    """Upper bounds on ``(2 pi)^-2 int |w|^a |b^(w)| dw``, ``a = 0, 1, 2`` (module docstring), unit amplitude."""
    if q < 3:
        raise ValueError(f"the Hessian bound needs smoothness q >= 3, got {q}")
    out = []
    zeros = special.jn_zeros(q + 1, int(top / math.pi) + 2)
    cuts = np.concatenate([[0.0], zeros[zeros < top], [top]])
    for a in (0, 1, 2):
        body = sum(
            integrate.quad(lambda u, a=a: u ** (a - q) * abs(special.jv(q + 1, u)), lo, hi, epsabs=0, epsrel=1e-10)[0]
            for lo, hi in zip(cuts[:-1], cuts[1:], strict=True)
        )
        tail = 1.001 * math.sqrt(2 / math.pi) * top ** (a - q + 0.5) / (q - a - 0.5)
        out.append(radius ** (-a) * 2**q * math.factorial(q) * (body + tail) * (1 + 1e-8))
    return tuple(out)


def radial_sups(values: np.ndarray, rho: np.ndarray) -> tuple[float, float, float]:
    """``sup|f|``, ``sup|f'|`` and ``sup ||hess f||`` (``max(|f''|, |f'| / rho)``) of a radial profile sampled on a
    fine uniform grid ``rho`` (finite differences of a polynomial: accurate to the grid)."""
    d1 = np.gradient(values, rho)
    d2 = np.gradient(d1, rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        over = np.where(rho > 0, np.abs(d1) / np.where(rho > 0, rho, 1.0), np.abs(d2))
    return float(np.abs(values).max()), float(np.abs(d1).max()), float(np.maximum(np.abs(d2), over).max())


@lru_cache(maxsize=16)
def kernel_sups(kernel_radius: float, q: int) -> dict[str, float]:
    """``F2, G2, H2`` of the normalised bump kernel (sampled sups on 200001 radii, 1e-6 relative margin)."""
    rho = np.linspace(0.0, kernel_radius, 200_001)
    f, g, h = radial_sups(profile(rho, kernel_radius, q) / kernel_mass(kernel_radius, q), rho)
    return {"F2": f * (1 + 1e-6), "G2": g * (1 + 1e-6), "H2": h * (1 + 1e-6)}


@dataclass(frozen=True)
class BumpImage:
    """``r(x) = sum_j c_j b(x - p_j)`` with radial atoms of radius ``radius`` and smoothness ``q``; ``blur`` > 0
    is ``k * r`` for the bump kernel of that radius (its atoms are the profile :func:`blurred_profile`)."""

    amplitudes: np.ndarray
    centres: np.ndarray
    radius: float
    q: int = 3
    blur: float = 0.0

    def _like(self, other: BumpImage) -> None:
        if (self.radius, self.q, self.blur) != (other.radius, other.q, other.blur):
            raise ValueError("bump images of different radius, smoothness or blur cannot be added")

    def __add__(self, other: BumpImage) -> BumpImage:
        self._like(other)
        return BumpImage(
            np.concatenate([self.amplitudes, other.amplitudes]),
            np.concatenate([self.centres, other.centres]),
            self.radius,
            self.q,
            self.blur,
        )

    def scaled(self, factor: float) -> BumpImage:
        return BumpImage(self.amplitudes * factor, self.centres, self.radius, self.q, self.blur)

    def transformed(self, matrix: np.ndarray) -> BumpImage:
        """``pi_A r = r(A^-1 .)``: centres ``A p`` (radial atoms)."""
        return BumpImage(self.amplitudes, self.centres @ np.asarray(matrix, float).T, self.radius, self.q, self.blur)

    def blurred(self, kernel_radius: float) -> BumpImage:
        if self.blur:
            raise ValueError("this image is already blurred")
        return BumpImage(self.amplitudes, self.centres, self.radius, self.q, float(kernel_radius))

    def radial(self, rho: np.ndarray) -> np.ndarray:
        """One atom's profile at radii ``rho``."""
        if not self.blur:
            return profile(rho, self.radius, self.q)
        reach = self.radius + self.blur
        return np.where(rho < reach, blurred_profile(self.radius, self.blur, self.q)(np.minimum(rho, reach)), 0.0)

    def evaluate(self, points: np.ndarray) -> np.ndarray:
        pts = np.asarray(points, float)
        out = np.zeros(pts.shape[:-1])
        for c, p in zip(self.amplitudes, self.centres, strict=True):
            out += c * self.radial(np.sqrt(((pts - p) ** 2).sum(-1)))
        return out

    def radial_transform(self, norm: np.ndarray) -> np.ndarray:
        """One atom's transform at frequency magnitudes ``norm`` (times ``k^`` when blurred)."""
        radial = profile_transform(norm, self.radius, self.q)
        if self.blur:
            radial = radial * profile_transform(norm, self.blur, self.q) / kernel_mass(self.blur, self.q)
        return radial

    def phases(self, w: np.ndarray) -> np.ndarray:
        """``sum_j c_j e^{-i w.p_j}`` at frequencies ``(..., 2)``."""
        out = np.zeros(np.shape(w)[:-1], dtype=complex)
        for c, p in zip(self.amplitudes, self.centres, strict=True):
            out += c * np.exp(-1j * (np.asarray(w, float) @ p))
        return out

    def fourier(self, w: np.ndarray) -> np.ndarray:
        """``r^(w) = int r(x) e^{-i w.x} dx`` at frequencies ``(..., 2)``."""
        w = np.asarray(w, float)
        return self.radial_transform(np.sqrt((w**2).sum(-1))) * self.phases(w)

    def support_radius(self, tail: float = 0.0) -> float:
        return float(np.max(np.linalg.norm(self.centres, axis=1)) + self.radius + self.blur)


def bump_bounds(image: BumpImage) -> np.ndarray:
    """``(F, G, H)`` Fourier-L1 bounds: ``sum_j |c_j| I_a`` (blur only lowers ``|r^|``)."""
    return np.abs(image.amplitudes).sum() * np.asarray(fourier_integrals(image.radius, image.q))


@dataclass(frozen=True)
class BumpLaw:
    """``r = s + t a``: ``s`` has ``atoms`` radial bumps with random signs and centres uniform in the disk of radius
    ``spread`` (an O(2)-invariant zero-mean law); ``a`` is one bump of the same radius at ``asym_centre``."""

    atoms: int = 6
    spread: float = 1.2
    bump_radius: float = 0.5
    smoothness: int = 3
    asym_centre: tuple[float, float] = (0.6, 0.3)

    def symmetric_part(self, rng: np.random.Generator) -> BumpImage:
        signs = rng.choice([-1.0, 1.0], self.atoms)
        radius = self.spread * np.sqrt(rng.uniform(0, 1, self.atoms))
        phi = rng.uniform(0, 2 * math.pi, self.atoms)
        centres = np.stack([radius * np.cos(phi), radius * np.sin(phi)], -1)
        return BumpImage(signs, centres, self.bump_radius, self.smoothness)

    def asymmetric_part(self) -> BumpImage:
        return BumpImage(np.array([1.0]), np.array([self.asym_centre], float), self.bump_radius, self.smoothness)

    def sample(self, n: int, rng: np.random.Generator) -> list[BumpImage]:
        return [self.symmetric_part(rng) for _ in range(n)]

    def support(self, kernel_radius: float) -> float:
        """Radius beyond which every ``r_hat_n`` vanishes."""
        return max(self.spread, math.hypot(*self.asym_centre)) + self.bump_radius + kernel_radius
