"""G-invariant linear filters on a disk of taps and their least-squares fit (Lemma 4.1; docs/theory.md, 2.3).

Linear convolutional denoisers ``x_hat(p) = sum_d w(d) y(p + d)`` with taps ``d`` on a disk of radius ``radius``,
fitted in closed form by least squares (:func:`normal_equations`, :func:`fit_filter`), with the filter constrained
to be G-invariant by group averaging (Lemma 4.1: ``w_bar = (1/|G|) sum_A pi_A w``, :func:`group_average_operator`,
:func:`invariant_basis`). A correlation with a G-invariant filter is a G-equivariant operator; for quarter turns the
filter rotation is an exact tap permutation, for other angles a bicubic interpolation (error O(h^2), Lemma 3.4).
The sample-adaptive variant rotates a G-invariant filter per sample by the sample's dominant orientation
(:func:`dominant_orientation`, a structure-tensor angle), like SA-Conv's per-sample ``D_w``. Two other ways to a
G-equivariant linear filter: augmentation (:func:`augmented_normal_equations`) and Lemma 4.1 after training.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from symmetry.errors import UsageError
from symmetry.groups import get_group, turn_matrix
from symmetry.transforms import disk_offsets, lattice_operator

KEEP_SINGULAR = 0.75
"""Singular values of the group average above which a direction counts as G-invariant. They are 0 or 1 for
grid-exact groups; with interpolated rotations the invariant directions have values near 1, while quarter-turn
invariant filters that an interpolated rotation wipes out (fine detail) sit near 1/2 (rot8) and are dropped."""


def filter_taps(radius: int) -> torch.Tensor:
    """Integer tap offsets ``(x, y)`` (x along columns, y up) of a disk of radius ``radius``: ``(P, 2)`` float64."""
    if radius < 0:
        raise UsageError(f"filter radius must be >= 0, got {radius}")
    if radius == 0:
        return torch.zeros(1, 2, dtype=torch.float64)
    return disk_offsets(float(radius), 1.0)


def rotation_operator(radius: int, matrix: torch.Tensor) -> torch.Tensor:
    """The matrix ``R`` ``(P, P)`` with ``(R w)(d) = w(A^-1 d)`` on the disk taps: ``pi~_A`` acting on a filter.

    ``matrix`` is ``A`` ``(2, 2)``, or a stack ``(G, 2, 2)`` giving ``(G, P, P)``.
    :func:`symmetry.transforms.lattice_operator` on the taps: grid-exact ``A`` (entries in {-1, 0, 1}) give an
    exact permutation; other angles read the filter, zero outside the disk, with the bicubic weights of
    :func:`symmetry.transforms.interpolate`.
    """
    taps = filter_taps(radius)
    matrices = matrix.to(torch.float64)
    ops = lattice_operator(matrices[None] if matrices.dim() == 2 else matrices, taps, taps, "bicubic")
    return ops[0] if matrices.dim() == 2 else ops


@lru_cache(maxsize=32)
def group_average_operator(radius: int, group: str | None) -> torch.Tensor:
    """Lemma 4.1 on filters: ``Pi_G = (1/|G|) sum_A R_A`` ``(P, P)``; ``Pi_G w`` is G-invariant (exactly for quarter
    turns). ``group`` ``None``, ``"plain"`` or ``"rot1"`` gives the identity."""
    p = filter_taps(radius).shape[0]
    if group in (None, "plain", "rot1"):
        return torch.eye(p, dtype=torch.float64)
    g = get_group(group)
    if any(e.is_reflection for e in g):
        raise UsageError(f"linear filters here use rotation groups (rotN), got {group}")
    ops = [rotation_operator(radius, e.tensor()) for e in g]
    return torch.stack(ops).mean(0)


def invariant_basis(radius: int, group: str | None) -> torch.Tensor:
    """Orthonormal basis ``(P, r)`` of the G-invariant filters: the range of the group average ``Pi_G``.

    For grid-exact groups ``Pi_G`` is an orthogonal projection (singular values 0 or 1) and this is exactly its
    range; with interpolated rotations the directions with singular value above :data:`KEEP_SINGULAR` are kept.
    """
    avg = group_average_operator(radius, group)
    if group in (None, "plain", "rot1"):
        return avg
    u, s, _ = torch.linalg.svd(avg)
    return u[:, s > KEEP_SINGULAR].contiguous()


@lru_cache(maxsize=8)
def _rotation_table(radius: int, step_deg: float) -> torch.Tensor:
    count = round(360.0 / step_deg)
    if abs(count * step_deg - 360.0) > 1e-9:
        raise UsageError(f"angle step {step_deg} must divide 360 degrees")
    return rotation_operator(radius, torch.stack([turn_matrix(k * step_deg / 360.0) for k in range(count)]))


def rotation_operators(radius: int, angles_deg: torch.Tensor, step_deg: float = 1.0) -> torch.Tensor:
    """``(N, P, P)`` rotation operators for per-sample angles (degrees), rounded to multiples of ``step_deg``."""
    table = _rotation_table(radius, float(step_deg))
    bins = torch.round(angles_deg.to(torch.float64) / step_deg).long() % table.shape[0]
    return table[bins]


def rotatable_basis(radius: int, group: str | None, step_deg: float = 1.0) -> torch.Tensor:
    """Orthonormal basis ``(P, r)`` of the G-invariant filters that interpolated rotations keep: the eigenvectors of
    ``mean_theta R_theta^T R_theta`` (on the G-invariant filters) with eigenvalue above 1/2.

    A bicubic rotation wipes out the finest filter patterns (at 45 degrees some exactly); a sample-adaptive filter
    ``R_theta w`` fitted at a few angles would leave those undetermined and blow up at other angles. On this subspace
    every rotation keeps at least a fixed fraction of the filter (about 0.4 in norm for radius 4).
    """
    table = _rotation_table(radius, float(step_deg))
    base = invariant_basis(radius, group)
    kept = torch.einsum("tqp,tqr->pr", table, table) / table.shape[0]
    vals, vecs = torch.linalg.eigh(base.T @ kept @ base)
    return (base @ vecs[:, vals > 0.5]).flip(1).contiguous()


def patch_vectors(images: torch.Tensor, radius: int) -> torch.Tensor:
    """Tap values around every interior pixel: ``(N, H - 2r, W - 2r, P)`` for images ``(N, H, W)``.

    Entry ``[n, i, j, t]`` is ``images[n, i + r - y_t, j + r + x_t]`` for tap ``(x_t, y_t)``, so that a filter ``w``
    predicts ``patch_vectors(...) @ w`` at the interior pixels (a cross-correlation, as in ``F.conv2d``).
    """
    if images.dim() != 3:
        raise UsageError(f"images must be (N, H, W), got shape {tuple(images.shape)}")
    n, h, w = images.shape
    if h <= 2 * radius or w <= 2 * radius:
        raise UsageError(f"images of {h}x{w} are too small for a filter of radius {radius}")
    side = 2 * radius + 1
    taps = filter_taps(radius).long()
    index = (radius - taps[:, 1]) * side + (radius + taps[:, 0])  # row-major position in the side x side patch
    cols = F.unfold(images[:, None], side)[:, index]  # (N, P, L)
    return cols.transpose(1, 2).reshape(n, h - 2 * radius, w - 2 * radius, -1)


def interior(images: torch.Tensor, radius: int) -> torch.Tensor:
    """The pixels a radius-``radius`` filter predicts: ``images[:, r:-r, r:-r]``."""
    return images[:, radius : images.shape[1] - radius, radius : images.shape[2] - radius]


def normal_equations(
    noisy: torch.Tensor,
    clean: torch.Tensor,
    radius: int,
    operators: torch.Tensor | None = None,
    chunk: int = 128,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``A = sum V^T V``, ``b = sum V^T x`` and the number of samples for least squares ``min_w ||V w - x||^2``.

    ``V`` holds the :func:`patch_vectors` of ``noisy`` ``(N, H, W)``, ``x`` the interior of ``clean``. With
    per-sample ``operators`` ``(N, P, P)`` the filter of sample ``n`` is ``operators[n] @ w`` (the sample-adaptive
    model), i.e. ``V_n`` is replaced by ``V_n @ operators[n]``. Computed in float64, ``chunk`` images at a time.
    """
    p = filter_taps(radius).shape[0]
    a = torch.zeros(p, p, dtype=torch.float64)
    b = torch.zeros(p, dtype=torch.float64)
    count = 0
    for start in range(0, noisy.shape[0], chunk):
        v = patch_vectors(noisy[start : start + chunk].to(torch.float64), radius)
        x = interior(clean[start : start + chunk].to(torch.float64), radius)
        v = v.reshape(v.shape[0], -1, p)
        x = x.reshape(x.shape[0], -1)
        if operators is not None:
            v = v @ operators[start : start + chunk].to(torch.float64)
        a += torch.einsum("nqi,nqj->ij", v, v)
        b += torch.einsum("nqi,nq->i", v, x)
        count += x.numel()
    return a, b, count


@lru_cache(maxsize=32)
def _group_operators(radius: int, group: str) -> torch.Tensor:
    return torch.stack([rotation_operator(radius, e.tensor()) for e in get_group(group)])


def augmented_normal_equations(
    a: torch.Tensor, b: torch.Tensor, radius: int, group: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal equations of the training set augmented by every element of ``group`` (rotations):
    ``(mean_A R_A A R_A^T, mean_A R_A b)``, since the tap vectors of ``pi_A y`` at ``A p`` are ``R_A v``.

    Exact for quarter turns (``R_A`` a permutation); for other angles ``R_A`` interpolates the tap vectors.
    """
    ops = _group_operators(radius, group)
    a_aug = torch.einsum("gij,jk,glk->il", ops, a.to(torch.float64), ops) / len(ops)
    b_aug = torch.einsum("gij,j->i", ops, b.to(torch.float64)) / len(ops)
    return a_aug, b_aug


def fit_filter(a: torch.Tensor, b: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Least-squares filter in the span of ``basis`` ``(P, r)``: ``w = B (B^T A B)^+ B^T b``, ``(P,)``."""
    lhs = basis.T @ a @ basis
    rhs = basis.T @ b
    coef = torch.linalg.lstsq(lhs, rhs[:, None], driver="gelsd").solution[:, 0]
    return basis @ coef


def apply_filter(
    noisy: torch.Tensor, weights: torch.Tensor, radius: int, operators: torch.Tensor | None = None
) -> torch.Tensor:
    """Predictions at the interior pixels: ``(N, H - 2r, W - 2r)``; per-sample ``operators`` rotate the filter."""
    v = patch_vectors(noisy.to(torch.float64), radius)
    if operators is None:
        return v @ weights.to(torch.float64)
    per_sample = torch.einsum("npq,q->np", operators.to(torch.float64), weights.to(torch.float64))
    return torch.einsum("nhwp,np->nhw", v, per_sample)


def filter_image(weights: torch.Tensor, radius: int) -> torch.Tensor:
    """The filter as a ``(2r+1, 2r+1)`` array (row-major, y up), zeros off the disk; usable with ``F.conv2d``."""
    taps = filter_taps(radius).long()
    out = torch.zeros(2 * radius + 1, 2 * radius + 1, dtype=weights.dtype)
    out[radius - taps[:, 1], radius + taps[:, 0]] = weights
    return out


def _gaussian_derivatives(sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    half = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    dg = -t / sigma**2 * g
    # d/dx along columns, d/dy with y up (against rows)
    kx = g[:, None] * dg[None, :]
    ky = -(dg[:, None] * g[None, :])
    return kx, ky


def dominant_orientation(images: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """Per-image dominant gradient orientation in degrees, in ``[0, 180)``: ``(N,)`` for images ``(N, H, W)``.

    The angle of the leading eigenvector of the structure tensor ``sum grad grad^T`` (Gaussian-derivative gradients of
    scale ``sigma``, valid region only). It is rotation-equivariant: rotating an image by a quarter turn adds 90
    degrees (mod 180) exactly, other angles up to interpolation; white noise adds an isotropic term and no bias.
    """
    kx, ky = _gaussian_derivatives(sigma)
    x = images.to(torch.float64)[:, None]
    gx = F.conv2d(x, kx[None, None])
    gy = F.conv2d(x, ky[None, None])
    jxx, jyy, jxy = (gx * gx).sum((1, 2, 3)), (gy * gy).sum((1, 2, 3)), (gx * gy).sum((1, 2, 3))
    angle = 0.5 * torch.atan2(2 * jxy, jxx - jyy)
    return torch.rad2deg(angle) % 180.0
