"""Smooth filter bases for equivariant convolutions (theory.md, section 3).

Filters are expanded in a fixed smooth basis -- a band-limited 2D Fourier series
(:class:`FourierBasis`; NOT F-Conv: F-Conv by Xie et al. reduces its Fourier functions with a PCA over the
rotated copies, a step this basis does not take), or the bicubic interpolation of a coefficient grid as in
B-Conv (:class:`BicubicBasis`, Xie et al.) -- and the basis is *evaluated* on a transformed mesh: the filter
for group element ``A`` is ``phi(A^-1 D_w^-1 delta_ij)``, where ``delta_ij`` are the kernel taps.
:func:`make_basis` builds either by name.

Masks (``MASKS``): ``"disk"`` (this project's): every function is multiplied by a radial mask evaluated at the
*deformed* point ``A^-1 D^-1 delta`` (1 inside radius ``(p - 1) / 2``, Gaussian roll-off of
:data:`MASK_SOFTNESS` px outside); ``"authors"``: the authors' mask (their ``MaskC``), a fixed weight per
*undeformed* tap, :func:`authors_tap_mask`, applied to the filter after evaluation (the basis itself unmasked).

Coordinates follow :mod:`symmetry.transforms`: plane points are ``(x, y)`` with ``x``
along columns and ``y`` up (against rows), centred on the kernel. A rotation by a
multiple of 90 degrees maps the tap grid onto itself with exact integer arithmetic, so
the rotated filters are exact permutations of the unrotated ones; for other angles the
basis is evaluated off the grid (continuous, hence only approximately equivariant).

Everything here is computed in float64 and is differentiable in the points, so the
sample-adaptive layers can back-propagate into the deformation ``D_w``.
"""

from __future__ import annotations

import math

import torch

from symmetry.errors import UsageError
from symmetry.transforms import cubic

BASES = ("fourier", "bicubic")
"""Names accepted by :func:`make_basis` (and by ``build_model(..., basis=...)``)."""
MASKS = ("disk", "authors")
"""``disk``: radial mask at the deformed points (ours); ``authors``: :func:`authors_tap_mask` at the taps."""
AUTHORS_MASK_WIDTH = {True: 0.2, False: 2.0}
"""The authors' mask decay ``exp(-max(r^2 - 1, 0) / width)`` (``r`` the tap radius over ``(p - 1) / 2``), by
whether the kernel is larger than 4 taps (their ``MaskC``)."""
_TINY = 1e-12
MASK_SOFTNESS = 0.5
"""Width (in pixels) of the Gaussian roll-off of the radial disk mask outside its radius."""


def kernel_grid(size: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Plane coordinates ``(x, y)`` of the taps of a ``size x size`` kernel, row-major: ``(size*size, 2)``.

    Tap ``(a, b)`` (row ``a``, column ``b``) sits at ``x = b - c``, ``y = c - a`` with
    ``c = (size - 1) / 2``; this is the offset that ``F.conv2d`` (a cross-correlation)
    reads the input at, relative to the output pixel.
    """
    c = (size - 1) / 2
    idx = torch.arange(size, dtype=dtype, device=device)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    return torch.stack([cols - c, c - rows], dim=-1).reshape(-1, 2)


def subpixel_grid(size: int, scale: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Offsets ``d = o - scale * u`` of a sub-pixel convolution, in *output* pixels: ``(scale, scale, size, size, 2)``.

    A ``size x size`` convolution with ``C * scale**2`` outputs followed by
    ``PixelShuffle(scale)`` computes ``out(y) = sum_x K(y - scale * x) f(x)``; output
    channel ``(i, j)`` (sub-pixel row/column), kernel tap ``(a, b)`` reads ``K`` at
    ``d = o(i, j) - scale * u(a, b)``. On centred grids this set of offsets is closed
    under 90-degree rotations, so evaluating a rotated continuous ``K`` on it keeps the
    upsampler exactly equivariant to quarter turns (theory.md, section 1).
    """
    taps = kernel_grid(size, dtype, device).reshape(size, size, 2)
    sub = kernel_grid(scale, dtype, device).reshape(scale, scale, 2)  # o(i, j), centred sub-pixel offsets
    return sub[:, :, None, None, :] - scale * taps[None, None, :, :, :]


def fourier_frequencies(band: float) -> list[tuple[int, int]]:
    """Integer frequencies ``(k, l)`` with ``k^2 + l^2 <= band^2`` in a half plane (one of each ``+-`` pair)."""
    n = int(math.floor(band))
    out = []
    for k in range(0, n + 1):
        for m in range(-n, n + 1):
            if k * k + m * m > band * band + 1e-9:
                continue
            if k == 0 and m < 0:
                continue
            out.append((k, m))
    return out


def authors_tap_mask(kernel_size: int, rotations: int) -> torch.Tensor:
    """The authors' filter mask, one weight per undeformed tap in :func:`kernel_grid` order: ``(size*size,)``.

    With ``rotations`` (the number of rotations in the group: 8 for ``rot8``, 4 for ``rot4``/``dih4``) in
    ``(1, 2, 4)`` every weight is 1 (the quarter turns map the tap grid onto itself, no mask); otherwise
    ``exp(-max(r^2 - 1, 0) / w)`` with ``r = |delta| / ((size - 1) / 2)`` and ``w`` from
    :data:`AUTHORS_MASK_WIDTH` (0.2 for kernels larger than 4). For rot8 at 5x5: corner ``exp(-5) = 0.0067``,
    tap ``(2, 1)`` from the centre ``exp(-1.25) = 0.2865``, taps inside the inscribed circle 1.
    """
    if rotations in (1, 2, 4):
        return torch.ones(kernel_size * kernel_size, dtype=torch.float64)
    half = max((kernel_size - 1) / 2, _TINY)
    r2 = (kernel_grid(kernel_size) / half).square().sum(-1)
    return torch.exp(-(r2 - 1).clamp(min=0) / AUTHORS_MASK_WIDTH[kernel_size > 4])


def _disk_mask(points: torch.Tensor, radius: float) -> torch.Tensor:
    """Radial disk mask ``(...,)``: 1 for ``|p| <= radius``, Gaussian roll-off of :data:`MASK_SOFTNESS` outside."""
    # sqrt of the clamped squared radius: differentiable everywhere, also at the centre tap
    r = points.square().sum(-1).clamp(min=max(radius**2, _TINY)).sqrt()
    excess = r - max(radius, math.sqrt(_TINY))
    return torch.exp(-0.5 * (excess / MASK_SOFTNESS) ** 2)


class FourierBasis:
    """Band-limited Fourier-series basis on a disk: ``mask(|p|) * {cos, sin}(2 pi (k x + l y) / period)``.

    Not F-Conv's basis: F-Conv (Xie et al.) takes a PCA of its Fourier functions over the rotated copies and
    keeps the leading components; this basis keeps the raw functions inside the frequency disk.

    ``period`` is the kernel size ``p`` (in the units of the points), the frequencies are
    the integer pairs inside a disk of radius ``band`` (default ``(p - 1) / 2``, so the
    highest frequency stays below the tap grid's Nyquist limit), and the radial mask is
    1 inside ``radius`` (default ``(p - 1) / 2``) with a smooth Gaussian roll-off
    outside (``disk=False``: no mask). Each function is scaled to unit L2 norm on the unrotated ``p x p`` tap
    grid (or on the mesh given to :meth:`set_normalisation`).
    On that grid the functions are linearly independent (they are a subset of the DFT).
    """

    def __init__(
        self, kernel_size: int, band: float | None = None, radius: float | None = None, *, disk: bool = True
    ) -> None:
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.period = float(kernel_size)
        self.band = (kernel_size - 1) / 2 if band is None else float(band)
        self.radius = (kernel_size - 1) / 2 if radius is None else float(radius)
        self.disk = disk
        freqs = fourier_frequencies(self.band)
        self._cos = torch.tensor(freqs, dtype=torch.float64)
        self._sin = torch.tensor([f for f in freqs if f != (0, 0)], dtype=torch.float64).reshape(-1, 2)
        self.set_normalisation(kernel_grid(kernel_size))

    def set_normalisation(self, points: torch.Tensor) -> None:
        """Scale every function to unit L2 norm over ``points`` ``(P, 2)`` (the unrotated mesh it is used on)."""
        self._norm = self._raw(points.to(torch.float64)).square().sum(0).sqrt()

    @property
    def size(self) -> int:
        """Number of basis functions."""
        return self._cos.shape[0] + self._sin.shape[0]

    def mask(self, points: torch.Tensor) -> torch.Tensor:
        """Radial disk mask ``(...,)``: 1 for ``|p| <= radius``, Gaussian roll-off outside (1 without ``disk``)."""
        if not self.disk:
            return torch.ones(points.shape[:-1], dtype=points.dtype, device=points.device)
        return _disk_mask(points, self.radius)

    def _raw(self, points: torch.Tensor) -> torch.Tensor:
        cos_f = self._cos.to(points)
        sin_f = self._sin.to(points)
        scale = 2 * math.pi / self.period
        cos_part = torch.cos(scale * points @ cos_f.T)
        sin_part = torch.sin(scale * points @ sin_f.T)
        return torch.cat([cos_part, sin_part], dim=-1) * self.mask(points)[..., None]

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Evaluate at ``points`` ``(..., 2)``; returns ``(..., size)`` in the points' dtype (differentiable)."""
        return self._raw(points) / self._norm.to(points)


def cubic_kernel(d: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel ``K(d)`` (``a = -0.5``, support ``|d| < 2``), elementwise.

    The one cubic of the project, :func:`symmetry.transforms.cubic`. ``K(0) = 1`` and ``K(n) = 0`` at the
    other integers, so a bicubic interpolant passes through its coefficients.
    """
    return cubic(d)


class BicubicBasis:
    """B-Conv basis: ``phi_j(p) = mask(|p|) K(p_x - n_jx) K(p_y - n_jy)``, one function per node ``n_j``.

    A filter ``sum_j w_j phi_j`` is the bicubic interpolation (Keys, :func:`cubic_kernel`) of
    the coefficient grid ``w`` laid on the nodes ``n_j`` = the ``kernel_size x kernel_size`` taps
    (:func:`kernel_grid`, row-major), times the radial mask of :class:`FourierBasis`. On the
    tap grid it reproduces the coefficients (``phi_j(n_i) = delta_ij`` after normalisation); a
    quarter turn or axis flip maps nodes onto nodes and ``K`` is even, so the rotated or
    reflected basis on the grid is an exact permutation of the functions. Each function is
    scaled to unit L2 norm on the mesh given to :meth:`set_normalisation` (default: the taps).
    ``disk=False``: no mask (the authors' B-Conv basis, whose mask :func:`authors_tap_mask` is applied per tap
    by the layer); then the norms on the taps are exactly 1.
    """

    def __init__(self, kernel_size: int, radius: float | None = None, *, disk: bool = True) -> None:
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, got {kernel_size}")
        self.kernel_size = kernel_size
        self.radius = (kernel_size - 1) / 2 if radius is None else float(radius)
        self.disk = disk
        self.nodes = kernel_grid(kernel_size)
        self.set_normalisation(self.nodes)

    @property
    def size(self) -> int:
        """Number of basis functions (one per coefficient-grid node)."""
        return self.nodes.shape[0]

    def set_normalisation(self, points: torch.Tensor) -> None:
        """Scale every function to unit L2 norm over ``points`` ``(P, 2)`` (the unrotated mesh it is used on)."""
        self._norm = self._raw(points.to(torch.float64)).square().sum(0).sqrt().clamp(min=_TINY)

    def mask(self, points: torch.Tensor) -> torch.Tensor:
        """Radial disk mask ``(...,)`` as the Fourier basis (1 without ``disk``)."""
        if not self.disk:
            return torch.ones(points.shape[:-1], dtype=points.dtype, device=points.device)
        return _disk_mask(points, self.radius)

    def _raw(self, points: torch.Tensor) -> torch.Tensor:
        d = points[..., None, :] - self.nodes.to(points)  # (..., n, 2)
        k = cubic_kernel(d)
        return k[..., 0] * k[..., 1] * self.mask(points)[..., None]

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """Evaluate at ``points`` ``(..., 2)``; returns ``(..., size)`` in the points' dtype (differentiable)."""
        return self._raw(points) / self._norm.to(points)


def make_basis(
    name: str, kernel_size: int, band: float | None = None, *, disk: bool = True
) -> FourierBasis | BicubicBasis:
    """The basis named ``name`` (one of :data:`BASES`); ``band`` applies to the Fourier basis only; ``disk``: the
    radial mask at the evaluated points (``False`` for the authors' tap mask, applied by the layer)."""
    if name == "fourier":
        return FourierBasis(kernel_size, band=band, disk=disk)
    if name == "bicubic":
        return BicubicBasis(kernel_size, disk=disk)
    raise UsageError(f"unknown basis {name!r}; choose one of {', '.join(BASES)}")
