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
- **Lattice lines.** A window's point ``p`` sits at row ``c_row - (A^-1 p)_y`` and column ``c_col + (A^-1 p)_x``;
  for the identity, quarter turns and 45-degree turns the lattice has few distinct rows and columns (33 and 33, or
  45 and 45, at radius 16 samples, against 797 points), so the windows are sampled on the grid of those lines by
  a separable filter of each window's block (:func:`symmetry.transforms.lattice_windows`), not tap by tap.
- **Patches at h < 1.** When ``1/h`` is an integer, only the native patches under the
  windows are upsampled (the same resampler on a crop gives the same values away from the
  crop's edge), not the whole image.
- **Orbit features.** The random frequencies come in orbits of D4 (feature ``(j, q)`` reads
  the window through ``Q_q``, :class:`RandomFourierFeatures`), so the features of a
  permuted window ``w_{QA}`` are the features of ``w_A`` permuted: only the coset
  representatives' windows go through the projection and the cosine, and
  ``d(QA) = Pi_Q S_A - S_e`` with ``S_A = sum_m z(w_A)``.
- **Cached projection.** The random-feature projection of a mesh's window lattice is
  computed once per process for given (features, channels, bandwidth, seed, radius, mesh).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from symmetry.errors import DataError
from symmetry.groups import get_group
from symmetry.settings import FEATURE_ORBIT, Settings
from symmetry.sources import ImageSource
from symmetry.streams import rng, seed_of
from symmetry.transforms import (
    SUPPORT_MARGIN,
    disk_offsets,
    lattice_permutations,
    lattice_windows,
    resize_matrix,
    to_mesh,
)

ORBIT = FEATURE_ORBIT
"""Features per orbit: the order of D4, the quarter turns and axis flips that map a window lattice onto itself."""


@lru_cache(maxsize=1)
def orbit_matrices() -> torch.Tensor:
    """The D4 matrices ``Q_q`` ``(8, 2, 2)`` indexing a feature orbit (``get_group("dih4")`` order, identity first)."""
    return get_group("dih4").matrices()


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

    Orbits: the ``D`` features are ``D / 8`` independent draws ``(omega_j, b_j)``, each read
    through the eight elements ``Q_q`` of D4: feature ``k = 8 j + q`` has ``omega_k(x) =
    omega_j(Q_q^T x)`` and phase ``b_j``. The process's covariance is rotation and reflection
    invariant, so every feature has the same law as an independent draw and the kernel
    estimate stays unbiased; in addition it is exactly D4-invariant, and the features of a
    window permuted by a lattice symmetry are a permutation of its features
    (:func:`feature_permutations`). ``features`` must be a multiple of 8.
    """

    def __init__(self, features: int, channels: int, bandwidth: float, seed: int, length: float = 1.0, modes: int = 16):
        if features < ORBIT or features % ORBIT:
            raise ValueError(
                f"random features come in orbits of {ORBIT}: features must be a multiple of {ORBIT}, got {features}"
            )
        g = torch.Generator().manual_seed(int(seed))
        f64 = torch.float64
        base = features // ORBIT
        self.key = (features, channels, float(bandwidth), int(seed), float(length), modes)
        freq = torch.randn(base, modes, 2, generator=g, dtype=f64) / length  # (D/8, J, 2)
        mode_phase = torch.rand(base, modes, generator=g, dtype=f64) * 2 * math.pi
        amp = torch.randn(base, channels, modes, generator=g, dtype=f64) * math.sqrt(2.0 / modes)
        amp /= math.sqrt(2 * math.pi) * length * bandwidth
        phase = torch.rand(base, generator=g, dtype=f64) * 2 * math.pi
        # omega_j(Q^T x) = sum_m amp cos(<Q f_m, x> + phi_m): the orbit rotates each mode's frequency
        self.freq = torch.einsum("qij,kmj->kqmi", orbit_matrices(), freq).reshape(features, modes, 2)  # (D, J, 2)
        self.mode_phase = mode_phase.repeat_interleave(ORBIT, dim=0)
        self.amp = amp.repeat_interleave(ORBIT, dim=0)
        self.phase = phase.repeat_interleave(ORBIT)
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


@lru_cache(maxsize=16)
def feature_permutations(features: int) -> torch.Tensor:
    """``perm`` ``(8, D)`` with ``z(w_{QA}) = z(w_A)[perm[q]]`` for ``Q = Q_q`` (:class:`RandomFourierFeatures`).

    ``w_{QA}(p) = w_A(Q^T p)``, so ``<omega_j(Q_q'^T .), w_{QA}> = <omega_j((Q^T Q_q')^T .), w_A>``: feature
    ``(j, q')`` of the permuted window is feature ``(j, index of Q^T Q_q')`` of ``w_A``.
    """
    mats = orbit_matrices()
    prod = torch.einsum("qji,rjk->qrik", mats, mats)  # Q_q^T Q_r
    table = (prod[:, :, None] - mats[None, None]).abs().flatten(-2).amax(-1).argmin(-1)  # (8, 8)
    base = torch.arange(features // ORBIT)[:, None] * ORBIT
    return torch.stack([(base + table[q][None, :]).reshape(-1) for q in range(ORBIT)])


# ---- which elements are interpolated ---------------------------------------------------------


@lru_cache(maxsize=64)
def _plan(radius: float, mesh: float, matrices: tuple) -> tuple[tuple[int, ...], tuple[tuple[int, int], ...]]:
    """Coset plan: representatives (interpolated) and, per element, ``(representative position, q)``.

    Element ``u`` equals ``Q_q A_r`` for a representative ``A_r`` and the D4 element ``Q_q``
    (:func:`orbit_matrices`; ``q = 0`` is the identity, as for a representative itself): its
    window is ``w_r`` with its lattice points permuted by ``Q_q``.
    """
    offsets = disk_offsets(radius, mesh)
    d4 = orbit_matrices()
    perms = lattice_permutations(offsets, d4)  # Q^-1 offsets[i] == offsets[perm[i]], all exact for a disk
    mats = torch.tensor(matrices, dtype=torch.float64)
    reps: list[int] = []
    source: list[tuple[int, int]] = []
    for u, m in enumerate(mats):
        found = None
        for pos, r in enumerate(reps):
            q = m @ mats[r].T  # Q = A_u A_r^-1
            for qi, dq in enumerate(d4):
                if torch.allclose(q, dq, atol=1e-9) and perms[qi] is not None:
                    found = (pos, qi)
                    break
            if found:
                break
        if found is None:
            reps.append(u)
            found = (len(reps) - 1, 0)
        source.append(found)
    return tuple(reps), tuple(source)


def interpolated_elements(matrices: torch.Tensor, radius: float, mesh: float) -> int:
    """How many elements of ``matrices`` are interpolated per image (one per coset of D4; :func:`_plan`)."""
    return len(_plan(float(radius), float(mesh), _key(matrices))[0])


@lru_cache(maxsize=64)
def _lattice_perms(radius: float, mesh: float) -> tuple[torch.Tensor, ...]:
    """The D4 permutations of the disk lattice (:func:`symmetry.transforms.lattice_permutations`), cached."""
    return tuple(lattice_permutations(disk_offsets(radius, mesh), orbit_matrices()))


@dataclass(frozen=True)
class Windows:
    """One image's windows at one mesh, stored once per coset of D4 (module docstring).

    ``reps`` ``(R, M, C*P)`` are the interpolated windows of the representatives; ``plan[u] = (r, q)`` says
    element ``u``'s windows are ``reps[r]`` with the lattice permuted by ``Q_q``.
    """

    reps: torch.Tensor
    plan: tuple[tuple[int, int], ...]
    radius: float
    mesh: float

    @property
    def count(self) -> int:
        """Windows per element ``M``."""
        return self.reps.shape[1]

    def full(self) -> torch.Tensor:
        """Every element's windows ``(G, M, C*P)`` (identity first)."""
        if all(q == 0 for _, q in self.plan) and len(self.plan) == len(self.reps):
            return self.reps
        perms = _lattice_perms(self.radius, self.mesh)
        m, cp = self.reps.shape[1:]
        lattice = self.reps.reshape(len(self.reps), m, -1, len(perms[0]))  # (R, M, C, P)
        out = lattice.new_empty(len(self.plan), *lattice.shape[1:])
        for u, (r, q) in enumerate(self.plan):
            out[u] = lattice[r] if q == 0 else lattice[r].index_select(-1, perms[q].to(lattice.device))
        return out.reshape(len(self.plan), m, cp)


def _key(matrices: torch.Tensor) -> tuple:
    return tuple(tuple(tuple(float(v) for v in row) for row in m) for m in matrices.double().cpu())


# ---- windows of one image ---------------------------------------------------------------------


def _natives(source, meshes: list[float]) -> tuple[torch.Tensor | None, list[torch.Tensor | None]]:
    """The decoded native image (when the source is a plain image) and the raster of each mesh.

    A plain image (``ImageSource`` with the default ``at_mesh``) is decoded once; meshes ``h < 1``
    with integer ``1/h`` get no raster (their windows are upsampled patch by patch).
    """

    if isinstance(source, ImageSource) and type(source).at_mesh is ImageSource.at_mesh:
        image = source.load()
        _check_finite(source, image)
        return image, [None if _patchable(h) else to_mesh(image, h) for h in meshes]
    rasters = [source.at_mesh(h) for h in meshes]
    for raster in rasters:
        _check_finite(source, raster)
    return None, rasters


def _check_finite(source, image: torch.Tensor) -> None:
    """DataError for NaN or infinite pixels (a finite sum proves every pixel finite; else look pixel by pixel)."""
    if not bool(torch.isfinite(image.sum())) and not bool(torch.isfinite(image).all()):
        raise DataError(f"{source.name}: image has NaN or infinite pixels")


def _patchable(h: float) -> bool:
    k = round(1 / h)
    return h < 1 and k >= 2 and abs(k * h - 1) < 1e-12


def _upsampled_patches(image: torch.Tensor, h: float, pix: torch.Tensor, reach: float):
    """Native patches under the windows, upsampled to mesh ``h`` (``1/h`` an integer) and stacked vertically.

    Returns ``(stack (C, M*S, S), pix_local (M, 2))`` where window ``m``'s centre is at ``pix_local[m]``
    of the stack, or None when a patch would not fit in the image (then the whole image is upsampled).
    The upsampling is :func:`symmetry.transforms.to_mesh` of each crop (as two products with
    :func:`symmetry.transforms.resize_matrix`): away from a crop's edge it gives
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
    crops = image.unfold(1, n, 1).unfold(2, n, 1)[:, top, left]  # (C, M, n, n), one gather
    s = k * n  # to_mesh of an n x n crop: S x S, rows then columns resized by one (S, n) matrix
    resize = resize_matrix(n, s).to(crops.dtype)
    tall = torch.einsum("ij,bjk->bik", resize, crops.reshape(c * m, n, n))  # rows first, as imresize: (C*M, S, n)
    stack = (tall.reshape(-1, n) @ resize.T).view(c, m * s, s)  # then every crop's columns in one product
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
) -> list[Windows]:
    """Mean-removed, area-weighted windows of one image (``(G, M, C*P)`` by :meth:`Windows.full`), one per mesh.

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
            plan = tuple((u, 0) for u in range(len(matrices)))  # every element interpolated: its own representative
            out.append(Windows((win * h).flatten(-2), plan, float(settings.radius), float(h)))
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


def _element_windows(image, pix, offsets, matrices, settings, h, device, dtype) -> Windows:
    """One interpolation per coset representative (the other elements are lattice permutations of it)."""
    reps, plan = _plan(float(settings.radius), float(h), _key(matrices))
    image, pix, offsets = image.to(device, dtype), pix.to(device, dtype), offsets.to(device, dtype)
    mats = matrices[list(reps)].to(device, dtype)
    sampled = image.new_empty(len(reps), len(pix), image.shape[0], len(offsets))  # (R, M, C, P)
    for r, m in enumerate(mats):  # each representative sampled along its lattice lines, written in place
        sampled[r] = lattice_windows(image, pix, offsets, m, settings.interpolation).transpose(0, 1)
    sampled.sub_(sampled.mean(dim=-1, keepdim=True)).mul_(h)  # mean removed, area-weighted, in place
    return Windows(sampled.flatten(-2), plan, float(settings.radius), float(h))


def feature_differences(windows: Windows, rff: RandomFourierFeatures, weights: torch.Tensor) -> torch.Tensor:
    """``d(A) = sum_m z(w_A) - z(w_e)`` ``(G, D)`` of one image (identity first).

    Only the representatives' windows are projected: ``sum_m z(w_{Q A_r}) = (sum_m z(w_{A_r}))[perm_q]``
    (:func:`feature_permutations`).
    """
    sums = rff(windows.reps, weights).sum(1)  # (R, D)
    perms = feature_permutations(sums.shape[-1]).to(sums.device)
    rows = [sums[r] if q == 0 else sums[r].index_select(0, perms[q]) for r, q in windows.plan]
    return torch.stack(rows) - sums[:1]


def invariant_median(windows: torch.Tensor, offsets: torch.Tensor) -> float:
    """``median |w - C w'|^2`` over pairs of distinct windows (rows of ``windows``, channel-major on the lattice
    ``offsets``) and the eight lattice permutations ``C`` of D4: unchanged when any window is replaced by ``B w``."""
    points = len(offsets)
    channels = windows.shape[-1] // points
    off = ~torch.eye(len(windows), dtype=torch.bool, device=windows.device)
    d2 = []
    for perm in lattice_permutations(offsets, get_group("dih4").matrices()):
        index = (perm[None, :] + points * torch.arange(channels)[:, None]).reshape(-1).to(windows.device)
        d2.append(torch.cdist(windows, windows[:, index]).pow(2)[off])
    return float(torch.cat(d2).median())


def median_bandwidth(sources, settings: Settings, device=None, images: int = 8, per_image: int = 64) -> float:
    """Median rule: ``sigma^2 = median |w - C w'|^2`` over pairs of distinct identity windows ``w, w'`` at mesh 1 of
    the first images and over the eight quarter turns and flips ``C`` of the window lattice.

    Taking every ``C`` makes sigma a G-invariant function of the images for every grid-exact group: replacing an
    image by ``pi_B x`` (and, as the randomisation null does, its window centres by ``B c``) replaces each of its
    windows by ``B w``, which only permutes the multiset ``{|w - C w'|^2 : C in D4}``. So the kernel is the same for
    every draw of the randomisation null and the test stays exact (with the plain median over identity windows the
    kernel depended on the images' orientations, which the null re-draws). Raises a DataError when the windows are
    (numerically) constant: a kernel width of ~1e-16 would turn rounding noise into a large symmetry error.
    """
    pilot = settings.replace(windows=per_image, exact=False)
    eye = torch.eye(2, dtype=torch.float64)[None]
    wins = [
        image_windows(src, i, [1.0], eye, pilot, device, torch.float64)[0].reps[0]
        for i, src in zip(range(images), sources)
    ]
    x = torch.cat(wins)
    sigma = math.sqrt(invariant_median(x, disk_offsets(settings.radius, 1.0)))
    if not sigma > 1e-9 * math.sqrt(x.shape[-1]):  # rounding noise of mean-removed constant windows is ~1e-16
        raise DataError(
            "the sampled windows are (nearly) constant, so the median kernel width is 0; the symmetry error is "
            "undefined for flat images (give --bandwidth, or use images with texture)"
        )
    return sigma
