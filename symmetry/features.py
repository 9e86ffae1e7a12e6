"""The per-image feature step of the symmetry estimator (theory.md, section 4): the hot path.

For one image and one mesh ``h`` it draws window centres, samples every group element's
window (``pi~_A``: the window grid transformed by ``A^-1``), removes each window's mean,
maps the windows through random Fourier features ``z`` and returns

    d(A) = sum over the image's windows of  z(w_A) - z(w_e)          (one row per element A)

which is all the statistics (:mod:`symmetry.estimators`) need.

Cost savings, none of which changes a number beyond floating-point rounding:

- **Cosets of the grid-exact elements.** Quarter turns and axis flips (the dihedral group
  D4) map the disk lattice onto itself, and ``w_{QA}(p) = w_A(Q^-1 p)``: every element of
  a coset ``D4 A`` is a lattice permutation of one interpolated window ``w_A``. Only one
  element per coset is interpolated (1 of 4 for rot4 and dih4, 2 of 8 for rot8).
- **Patches at h < 1.** When ``1/h`` is an integer, only the native patches under the
  windows are upsampled (the same resampler on a crop gives the same values away from the
  crop's edge), not the whole image.
- **Cached projection.** The random-feature projection of a mesh's window lattice is
  computed once per process for given (features, channels, bandwidth, seed, radius, mesh).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch

from symmetry.errors import DataError
from symmetry.groups import get_group
from symmetry.settings import Settings
from symmetry.streams import rng, seed_of
from symmetry.transforms import (
    SUPPORT_MARGIN,
    disk_offsets,
    interpolate,
    lattice_permutations,
    to_mesh,
    window_positions,
)


class RandomFourierFeatures:
    """Random Fourier features for a Gaussian kernel on windows viewed as functions on the disk.

    ``z_k(w) = sqrt(2/D) cos(<omega_k, w> / sigma + b_k)`` with ``<omega, w> = integral of
    omega(x) w(x) dx`` over the disk (a Riemann sum at mesh h). The frequency vectors
    ``omega_k`` are smooth random functions of the plane (a Gaussian process with covariance
    ``exp(-|x - y|^2 / (2 l^2)) / (2 pi l^2)``, drawn as ``modes`` random cosines), so that
    ``E z(w).z(w') = exp(-|w - w'|_l^2 / (2 sigma^2))``: a Gaussian kernel in the L2 metric
    smoothed on the length ``l`` (``|f|_l -> |f|_L2`` as ``l -> 0``). Because ``omega_k`` is a
    function of physical position, the same features serve every mesh size: eps_G(h)
    at different h is measured with one kernel and common random numbers.
    """

    def __init__(self, features: int, channels: int, bandwidth: float, seed: int, length: float = 1.0, modes: int = 16):
        g = torch.Generator().manual_seed(int(seed))
        f64 = torch.float64
        self.key = (features, channels, float(bandwidth), int(seed), float(length), modes)
        self.freq = torch.randn(features, modes, 2, generator=g, dtype=f64) / length  # (D, J, 2)
        self.mode_phase = torch.rand(features, modes, generator=g, dtype=f64) * 2 * math.pi
        self.amp = torch.randn(features, channels, modes, generator=g, dtype=f64) * math.sqrt(2.0 / modes)
        self.amp /= math.sqrt(2 * math.pi) * length * bandwidth
        self.phase = torch.rand(features, generator=g, dtype=f64) * 2 * math.pi
        self.scale = math.sqrt(2.0 / features)

    @classmethod
    def for_run(cls, features: int, channels: int, bandwidth: float, seed: int) -> RandomFourierFeatures:
        """The features of a measurement with ``seed`` (the ``features`` random stream)."""
        return cls(features, channels, bandwidth, seed_of(seed, "features"))

    def weights(self, points: torch.Tensor, mesh: float) -> torch.Tensor:
        """``(D, C*P)`` projection for windows sampled at physical ``points`` ``(P, 2)`` and scaled by ``mesh``."""
        basis = torch.cos(torch.einsum("kjd,pd->kjp", self.freq, points.to(torch.float64)) + self.mode_phase[..., None])
        return mesh * torch.einsum("kcj,kjp->kcp", self.amp, basis).flatten(1)

    def lattice_weights(self, radius: float, mesh: float, device=None, dtype=torch.float32) -> torch.Tensor:
        """:meth:`weights` of the disk lattice of ``radius`` at ``mesh``, cached per process."""
        key = (self.key, float(radius), float(mesh), str(device), dtype)
        hit = _PROJECTIONS.get(key)
        if hit is None:
            hit = self.weights(mesh * disk_offsets(radius, mesh), mesh).to(device, dtype)
            _PROJECTIONS[key] = hit
            while len(_PROJECTIONS) > _PROJECTION_CACHE:
                _PROJECTIONS.popitem(last=False)
        else:
            _PROJECTIONS.move_to_end(key)
        return hit

    def __call__(self, windows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Features ``(..., D)`` of windows ``(..., C*P)`` given :meth:`weights` for their mesh."""
        x = windows.reshape(-1, windows.shape[-1])
        phase = self.phase.to(x.device, x.dtype)
        return (self.scale * torch.cos(torch.addmm(phase, x, weights.to(x.device, x.dtype).T))).reshape(
            *windows.shape[:-1], -1
        )


_PROJECTIONS: OrderedDict = OrderedDict()
_PROJECTION_CACHE = 16  # projections kept (a (512, 797) float32 one is 1.6 MB)


# ---- which elements are interpolated ---------------------------------------------------------


@lru_cache(maxsize=64)
def _plan(radius: float, mesh: float, matrices: tuple) -> tuple[tuple[int, ...], tuple]:
    """Coset plan: representatives (interpolated) and, per element, ``(representative position, permutation)``.

    Element ``u`` equals ``Q A_r`` for a representative ``A_r`` and a grid-exact ``Q`` (D4);
    its window is then ``w_r`` with its lattice points permuted by ``Q`` (``perm`` is None
    for a representative itself).
    """
    offsets = disk_offsets(radius, mesh)
    d4 = get_group("dih4").matrices()
    perms = lattice_permutations(offsets, d4)  # Q^-1 offsets[i] == offsets[perm[i]], all exact for a disk
    mats = torch.tensor(matrices, dtype=torch.float64)
    reps: list[int] = []
    source: list = []
    for u, m in enumerate(mats):
        found = None
        for pos, r in enumerate(reps):
            q = m @ mats[r].T  # Q = A_u A_r^-1
            for qi, dq in enumerate(d4):
                if torch.allclose(q, dq, atol=1e-9) and perms[qi] is not None:
                    found = (pos, perms[qi])
                    break
            if found:
                break
        if found is None:
            reps.append(u)
            found = (len(reps) - 1, None)
        source.append(found)
    return tuple(reps), tuple(source)


def _key(matrices: torch.Tensor) -> tuple:
    return tuple(tuple(tuple(float(v) for v in row) for row in m) for m in matrices.double().cpu())


# ---- windows of one image ---------------------------------------------------------------------


def _natives(source, meshes: list[float]) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """The decoded native image (when the source is a plain image) and the raster of each mesh.

    A plain image (``ImageSource`` with the default ``at_mesh``) is decoded once; meshes ``h < 1``
    with integer ``1/h`` get no raster (their windows are upsampled patch by patch).
    """
    from symmetry.data import ImageSource

    if isinstance(source, ImageSource) and type(source).at_mesh is ImageSource.at_mesh:
        image = source.load()
        if not torch.isfinite(image).all():
            raise DataError(f"{source.name}: image has NaN or infinite pixels")
        return image, [None if _patchable(h) else to_mesh(image, h) for h in meshes]
    rasters = [source.at_mesh(h) for h in meshes]
    for raster in rasters:
        if not torch.isfinite(raster).all():
            raise DataError(f"{source.name}: image has NaN or infinite pixels")
    return None, rasters


def _patchable(h: float) -> bool:
    k = round(1 / h)
    return h < 1 and k >= 2 and abs(k * h - 1) < 1e-12


def _upsampled_patches(image: torch.Tensor, h: float, pix: torch.Tensor, reach: float):
    """Native patches under the windows, upsampled to mesh ``h`` (``1/h`` an integer) and stacked vertically.

    Returns ``(stack (C, M*S, S), pix_local (M, 2))`` where window ``m``'s centre is at ``pix_local[m]``
    of the stack, or None when a patch would not fit in the image (then the whole image is upsampled).
    The upsampling is :func:`symmetry.transforms.to_mesh` of each crop: away from a crop's edge it gives
    the whole raster's values (the output grid of a crop at integer native offset ``a`` is the raster's
    grid shifted by ``a / h`` rows), and a crop that reaches the image's edge is clamped as the image is.
    """
    k = round(1 / h)
    c, rows, cols = image.shape
    r = math.ceil(reach) + 1
    # Raster row i reads native rows floor((i + 0.5) / k - 0.5) - 1 .. + 2; a crop from native row
    # floor((p - r) / k) - 2 with 2 r / k + 6 rows serves raster rows p - r .. p + r without touching its edge.
    n = math.ceil(2 * r / k) + 6
    if n > rows or n > cols:
        return None
    m = pix.shape[0]
    top = (torch.floor((pix[:, 0] - r) / k).long() - 2).clamp(0, rows - n)
    left = (torch.floor((pix[:, 1] - r) / k).long() - 2).clamp(0, cols - n)
    i = torch.arange(n)
    index = (top[:, None, None] + i[None, :, None]) * cols + (left[:, None, None] + i[None, None, :])  # (M, n, n)
    crops = image.reshape(c, rows * cols)[:, index.reshape(-1)].reshape(c, m, n, n).transpose(0, 1)
    up = to_mesh(crops.reshape(m * c, n, n), h)  # (M*C, S, S), S = k n
    s = up.shape[-1]
    stack = up.reshape(m, c, s, s).transpose(0, 1).reshape(c, m * s, s)
    local = torch.stack([pix[:, 0] - k * top + s * torch.arange(m), pix[:, 1] - k * left], dim=-1)
    return stack, local


def image_windows(
    source,
    index: int,
    meshes: list[float],
    matrices: torch.Tensor,
    settings: Settings,
    device=None,
    dtype=torch.float32,
) -> list[torch.Tensor]:
    """Mean-removed, area-weighted windows ``(G, M, C*P)`` of one image, one tensor per mesh.

    Window centres are uniform continuous points of the image plane drawn from the
    ``windows`` stream of ``(seed, index)``, in physical units, and shared by every mesh and
    every element (paired windows, common random numbers across h): eps_G(h) at different h
    then differ by discretisation, not by sampling noise. Windows are scaled by ``h`` so
    their Euclidean norm is the Riemann sum of the L2 norm over the disk.
    """
    native, rasters = _natives(source, meshes)
    shapes, boxes = [], []
    for h, raster in zip(meshes, rasters):
        reach = settings.radius / h + SUPPORT_MARGIN[settings.interpolation]
        if raster is not None:
            rows, cols = raster.shape[-2:]
        else:
            rows, cols = round(native.shape[-2] / h), round(native.shape[-1] / h)
        if min(rows, cols) < 2 * reach + 1:
            raise DataError(
                f"{source.name}: {cols}x{rows} pixels at mesh {h:g} is smaller than a window of radius "
                f"{settings.radius:g} px ({math.ceil(2 * reach + 1)} pixels); use a smaller --radius or drop mesh {h:g}"
            )
        shapes.append((rows, cols))
        boxes.append((((cols - 1) / 2 - reach) * h, ((rows - 1) / 2 - reach) * h))
    half = np.min(np.asarray(boxes), axis=0)  # physical half-extent where every mesh's windows fit
    centres = torch.from_numpy(rng(settings.seed, "windows", index).uniform(-half, half, (settings.windows, 2)))
    out = []
    for h, raster, (rows, cols) in zip(meshes, rasters, shapes):
        offsets = disk_offsets(settings.radius, h)
        if settings.exact:
            if not hasattr(source, "evaluate"):
                raise DataError(f"{source.name}: exact transforms need an analytic (synthetic) image")
            moved = h * torch.einsum("gji,pj->gpi", matrices.double(), offsets)  # A^-1 offsets, physical
            win = source.evaluate(centres[None, :, None, :] + moved[:, None]).permute(1, 2, 0, 3).to(device, dtype)
            win = win - win.mean(dim=-1, keepdim=True)
            out.append((win * h).flatten(-2))
            continue
        pix = torch.stack([(rows - 1) / 2 - centres[:, 1] / h, (cols - 1) / 2 + centres[:, 0] / h], dim=-1)
        image = raster
        if raster is None:
            reach = settings.radius / h + SUPPORT_MARGIN[settings.interpolation]
            patches = _upsampled_patches(native, h, pix, reach)  # float64, as the whole raster would be
            if patches is None:
                image = to_mesh(native, h)
            else:
                image, pix = patches
        out.append(_element_windows(image, pix, offsets, matrices, settings, h, device, dtype))
    return out


def _element_windows(image, pix, offsets, matrices, settings, h, device, dtype) -> torch.Tensor:
    """Windows ``(G, M, C*P)``: one interpolation per coset representative, lattice permutations for the rest."""
    reps, plan = _plan(float(settings.radius), float(h), _key(matrices))
    rows, cols = window_positions(
        pix.to(device, dtype), offsets.to(device, dtype), matrices[list(reps)].to(device, dtype)
    )
    sampled = interpolate(image.to(device, dtype), rows, cols, settings.interpolation)  # (C, R, M, P)
    sampled = sampled.permute(1, 2, 0, 3)  # (R, M, C, P)
    sampled = (sampled - sampled.mean(dim=-1, keepdim=True)) * h
    if len(reps) == len(plan):
        return sampled.flatten(-2)
    out = sampled.new_empty(len(plan), *sampled.shape[1:])
    for g, (pos, perm) in enumerate(plan):
        out[g] = sampled[pos] if perm is None else sampled[pos].index_select(-1, perm.to(sampled.device))
    return out.flatten(-2)


def feature_differences(windows: torch.Tensor, rff: RandomFourierFeatures, weights: torch.Tensor) -> torch.Tensor:
    """``d(A) = sum_m z(w_A) - z(w_e)`` ``(G, D)`` of one image's windows ``(G, M, C*P)`` (identity first)."""
    z = rff(windows, weights)  # (G, M, D)
    return (z - z[:1]).sum(1)


def median_bandwidth(sources, settings: Settings, device=None, images: int = 8, per_image: int = 64) -> float:
    """Median rule: ``sigma^2 = median |w - w'|^2`` over identity windows at mesh 1 of the first images.

    Raises a DataError when the windows are (numerically) constant: a kernel width of ~1e-16 would turn
    rounding noise into a large symmetry error.
    """
    pilot = settings.replace(windows=per_image, exact=False)
    eye = torch.eye(2, dtype=torch.float64)[None]
    wins = [
        image_windows(src, i, [1.0], eye, pilot, device, torch.float64)[0][0] for i, src in zip(range(images), sources)
    ]
    x = torch.cat(wins)
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(len(x), dtype=torch.bool, device=d2.device)]
    sigma = float(off.median().sqrt())
    if not sigma > 1e-9 * math.sqrt(x.shape[-1]):  # rounding noise of mean-removed constant windows is ~1e-16
        raise DataError(
            "the sampled windows are (nearly) constant, so the median kernel width is 0; the symmetry error is "
            "undefined for flat images (give --bandwidth, or use images with texture)"
        )
    return sigma
