"""Estimators of the dataset symmetry error eps_G(h) (theory.md, section 4).

The default distance ``d(P_h, pi~_A P_h)`` is the squared maximum mean discrepancy with
a Gaussian kernel ``k(w, w') = exp(-|w - w'|^2 / (2 sigma^2))`` on mean-removed windows,
with ``|.|`` the L2 norm over the window's disk (a Riemann sum with area element h^2,
so values are comparable across mesh sizes). The kernel is approximated by random
Fourier features ``z``; then ``MMD^2 = |E z(w_A) - E z(w)|^2`` and everything the
estimate, its permutation null and its bootstrap need are sums over images of

    d_n(A) = sum over the windows of image n of  z(w_A) - z(w)        (paired windows)

kept in :class:`MMDStatistics`: constant memory, additive across batches and shards.
The reported value is the unbiased (U-statistic over images) estimate

    eps_A = sum_{n != n'} d_n(A) . d_n'(A) / (M^2 - sum_n m_n^2),

which has mean 0 for a G-invariant distribution (so it can be slightly negative),
``M = sum_n m_n`` windows in all. Calibration: the permutation null swaps an image
with its transform (``d_n -> -d_n``) with the same random sign for every element, so
the worst-over-G statistic has a valid family-wise null; the bootstrap resamples
images with Poisson(1) weights (streaming). Random signs and weights are functions of
``(seed, image index)`` only, so results do not depend on batching or sharding.

The second estimator, :func:`gaussian_distance`, is the Frechet (2-Wasserstein) distance
between moment-matched Gaussians, in squared image-norm units; it is a lower bound on
the true W2^2 (Gelbrich) but blind to half-turn-related asymmetries (theory.md, section 4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from symmetry.errors import DataError
from symmetry.runtime import DistInfo, all_reduce_sum, gather_objects
from symmetry.transforms import SUPPORT_MARGIN, disk_offsets, sample_windows, to_mesh


@dataclass(frozen=True)
class Settings:
    """Estimator settings; every field is recorded in the report."""

    radius: float = 8.0  # window radius rho in native pixels (physical, fixed across meshes)
    windows: int = 128  # windows per image and mesh
    features: int = 512  # random Fourier features D
    bandwidth: float | None = None  # kernel sigma in L2 units; None: median rule (see median_bandwidth)
    permutations: int = 200
    bootstrap: int = 200
    seed: int = 0
    interpolation: str = "bicubic"
    frechet: bool = False  # also accumulate window moments for the Gaussian (Frechet) distance
    exact: bool = False  # evaluate transformed windows analytically (synthetic fields only): no interpolation


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in keys])


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
        self.freq = torch.randn(features, modes, 2, generator=g, dtype=f64) / length  # (D, J, 2)
        self.mode_phase = torch.rand(features, modes, generator=g, dtype=f64) * 2 * math.pi
        self.amp = torch.randn(features, channels, modes, generator=g, dtype=f64) * math.sqrt(2.0 / modes)
        self.amp /= math.sqrt(2 * math.pi) * length * bandwidth
        self.phase = torch.rand(features, generator=g, dtype=f64) * 2 * math.pi
        self.scale = math.sqrt(2.0 / features)

    def weights(self, points: torch.Tensor, mesh: float) -> torch.Tensor:
        """``(D, C*P)`` projection for windows sampled at physical ``points`` ``(P, 2)`` and scaled by ``mesh``."""
        basis = torch.cos(torch.einsum("kjd,pd->kjp", self.freq, points.to(torch.float64)) + self.mode_phase[..., None])
        return mesh * torch.einsum("kcj,kjp->kcp", self.amp, basis).flatten(1)

    def __call__(self, windows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Features ``(..., D)`` of windows ``(..., C*P)`` given :meth:`weights` for their mesh."""
        x = windows.reshape(-1, windows.shape[-1])
        phase = self.phase.to(x.device, x.dtype)
        return (self.scale * torch.cos(torch.addmm(phase, x, weights.to(x.device, x.dtype).T))).reshape(
            *windows.shape[:-1], -1
        )


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

    Window centres are uniform continuous points of the image plane drawn from
    ``(seed, index)``, in physical units, and shared by every mesh and every element
    (paired windows, common random numbers across h): eps_G(h) at different h then
    differ by discretisation, not by sampling noise. Windows are scaled by ``h`` so
    their Euclidean norm is the Riemann sum of the L2 norm over the disk.
    """
    rasters, boxes = [], []
    for h, raster in zip(meshes, _rasters(source, meshes)):
        if not torch.isfinite(raster).all():
            raise DataError(f"{source.name}: image has NaN or infinite pixels")
        reach = settings.radius / h + SUPPORT_MARGIN[settings.interpolation]
        rows, cols = raster.shape[-2:]
        if min(rows, cols) < 2 * reach + 1:
            raise DataError(
                f"{source.name}: {cols}x{rows} pixels at mesh {h:g} is smaller than a window of radius "
                f"{settings.radius:g} px ({math.ceil(2 * reach + 1)} pixels); use a smaller --radius or drop mesh {h:g}"
            )
        rasters.append(raster)
        boxes.append((((cols - 1) / 2 - reach) * h, ((rows - 1) / 2 - reach) * h))
    half = np.min(np.asarray(boxes), axis=0)  # physical half-extent where every mesh's windows fit
    centres = torch.from_numpy(_rng(settings.seed, index).uniform(-half, half, (settings.windows, 2)))  # (x, y)
    out = []
    for h, raster in zip(meshes, rasters):
        offsets = disk_offsets(settings.radius, h)
        if settings.exact:
            if not hasattr(source, "evaluate"):
                raise DataError(f"{source.name}: exact transforms need an analytic (synthetic) image")
            moved = h * torch.einsum("gji,pj->gpi", matrices.double(), offsets)  # A^-1 offsets, physical
            win = source.evaluate(centres[None, :, None, :] + moved[:, None]).permute(1, 2, 0, 3).to(device, dtype)
        else:
            rows, cols = raster.shape[-2:]
            pix = torch.stack([(rows - 1) / 2 - centres[:, 1] / h, (cols - 1) / 2 + centres[:, 0] / h], dim=-1)
            win = sample_windows(
                raster.to(device, dtype),
                pix.to(device, dtype),
                offsets.to(device, dtype),
                matrices.to(device, dtype),
                settings.interpolation,
            )  # (G, M, C, P)
        win = win - win.mean(dim=-1, keepdim=True)
        out.append((win * h).flatten(-2))
    return out


def _rasters(source, meshes: list[float]) -> list[torch.Tensor]:
    """``source.at_mesh(h)`` for every mesh; an image file is read and decoded once for all of them."""
    from symmetry.data import ImageSource

    if isinstance(source, ImageSource) and type(source).at_mesh is ImageSource.at_mesh:
        image = source.load()
        return [to_mesh(image, h) for h in meshes]
    return [source.at_mesh(h) for h in meshes]


def median_bandwidth(sources, settings: Settings, device=None, images: int = 8, per_image: int = 64) -> float:
    """Median rule: ``sigma^2 = median |w - w'|^2`` over identity windows at mesh 1 of the first images."""
    pilot = Settings(**{**settings.__dict__, "windows": per_image, "exact": False})
    eye = torch.eye(2, dtype=torch.float64)[None]
    wins = [
        image_windows(src, i, [1.0], eye, pilot, device, torch.float64)[0][0] for i, src in zip(range(images), sources)
    ]
    x = torch.cat(wins)
    d2 = torch.cdist(x, x).pow(2)
    off = d2[~torch.eye(len(x), dtype=torch.bool, device=d2.device)]
    sigma = float(off.median().sqrt())
    if not sigma > 0:
        raise DataError("all sampled windows are constant; the symmetry error is undefined for flat images")
    return sigma


@dataclass
class MMDStatistics:
    """Sufficient statistics of the MMD estimator at one mesh (sums over images; see module docstring)."""

    order: int
    features: int
    permutations: int
    bootstrap: int
    seed: int
    sum_d: torch.Tensor = None  # (G, D)
    sum_dd: torch.Tensor = None  # (G,)  sum_n |d_n|^2
    windows: float = 0.0  # M
    windows_sq: float = 0.0  # sum_n m_n^2
    images: int = 0
    perm: torch.Tensor = None  # (B_perm, G, D)
    boot: torch.Tensor = None  # (B_boot, G, D)
    boot_dd: torch.Tensor = None  # (B_boot, G)
    boot_m: torch.Tensor = None  # (B_boot,)
    boot_m2: torch.Tensor = None  # (B_boot,)
    per_image: list = field(default_factory=list)  # (index, |d_n|^2 / m_n^2 per element)

    def __post_init__(self):
        g, d, bp, bb = self.order, self.features, self.permutations, self.bootstrap
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        for name, shape in (
            ("sum_d", (g, d)),
            ("sum_dd", (g,)),
            ("perm", (bp, g, d)),
            ("boot", (bb, g, d)),
            ("boot_dd", (bb, g)),
            ("boot_m", (bb,)),
            ("boot_m2", (bb,)),
        ):
            if getattr(self, name) is None:
                setattr(self, name, z(*shape))

    def add(self, index: int, d: torch.Tensor, m: int) -> None:
        """Fold in image ``index`` with its feature-difference sum ``d`` ``(G, D)`` over ``m`` windows."""
        d = d.detach().to("cpu", torch.float64)
        dd = (d * d).sum(-1)
        rng = _rng(self.seed, index, 7)
        signs = torch.from_numpy(rng.choice([-1.0, 1.0], self.permutations))
        weights = torch.from_numpy(rng.poisson(1.0, self.bootstrap).astype(np.float64))
        self.sum_d += d
        self.sum_dd += dd
        self.windows += m
        self.windows_sq += m * m
        self.images += 1
        # perm[b] += signs[b] * d and boot[b] += weights[b] * d as rank-one updates (no (B, G, D) temporary)
        flat = d.reshape(-1)
        self.perm, self.boot = self.perm.contiguous(), self.boot.contiguous()
        self.perm.view(self.permutations, flat.numel()).addr_(signs, flat)
        self.boot.view(self.bootstrap, flat.numel()).addr_(weights, flat)
        self.boot_dd += (weights**2)[:, None] * dd
        self.boot_m += weights * m
        self.boot_m2 += weights**2 * m * m
        self.per_image.append((index, (dd / (m * m)).tolist()))

    def merge(self, other: MMDStatistics) -> None:
        """Add another shard's statistics (same settings, disjoint images)."""
        for f in fields(self):
            if f.name in ("order", "features", "permutations", "bootstrap", "seed"):
                continue
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def all_reduce(self, info: DistInfo) -> None:
        """Sum the statistics of every rank (disjoint images) in place on every rank; per-image values are gathered."""
        if info.world <= 1:
            return
        sums = [name for name in _SUMS if name != "per_image"]
        flat = torch.cat([torch.as_tensor(getattr(self, n), dtype=torch.float64).reshape(-1) for n in sums])
        total = all_reduce_sum(flat, info)
        start = 0
        for name in sums:
            value = getattr(self, name)
            size = value.numel() if isinstance(value, torch.Tensor) else 1
            part = total[start : start + size]
            start += size
            if isinstance(value, torch.Tensor):
                setattr(self, name, part.reshape(value.shape).clone())
            else:
                setattr(self, name, type(value)(round(float(part)) if isinstance(value, int) else float(part)))
        self.per_image = sorted(
            (p for shard in gather_objects(self.per_image, info) for p in shard), key=lambda p: p[0]
        )

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict) -> MMDStatistics:
        return cls(**state)

    def estimate(self) -> dict[str, torch.Tensor]:
        """Unbiased eps per element ``(G,)``, its permutation null ``(B, G)`` and bootstrap ``(B, G)``."""
        if self.images < 2:
            raise DataError("the symmetry error needs at least 2 images (pairs of images enter the estimate)")
        denom = self.windows**2 - self.windows_sq
        eps = ((self.sum_d**2).sum(-1) - self.sum_dd) / denom
        null = ((self.perm**2).sum(-1) - self.sum_dd) / denom
        boot_denom = (self.boot_m**2 - self.boot_m2).clamp_min(1e-12)[:, None]
        boot = ((self.boot**2).sum(-1) - self.boot_dd) / boot_denom
        return {"eps": eps, "null": null, "boot": boot}


_SUMS = (
    "sum_d",
    "sum_dd",
    "windows",
    "windows_sq",
    "images",
    "perm",
    "boot",
    "boot_dd",
    "boot_m",
    "boot_m2",
    "per_image",
)
"""The additive fields of :class:`MMDStatistics` (the others are its settings)."""


@dataclass
class MomentStatistics:
    """Window sums for the Gaussian (Frechet) distance at one mesh: first and second moments per element."""

    order: int
    dim: int
    count: float = 0.0
    s1: torch.Tensor = None  # (G, dim)
    s2: torch.Tensor = None  # (G, dim, dim)

    def __post_init__(self):
        if self.s1 is None:
            self.s1 = torch.zeros(self.order, self.dim, dtype=torch.float64)
            self.s2 = torch.zeros(self.order, self.dim, self.dim, dtype=torch.float64)

    def add(self, windows: torch.Tensor) -> None:
        w = windows.to(torch.float64)
        self.s1 += w.sum(1).cpu()
        self.s2 += torch.einsum("gmi,gmj->gij", w, w).cpu()
        self.count += w.shape[1]

    def merge(self, other: MomentStatistics) -> None:
        self.count += other.count
        self.s1 += other.s1
        self.s2 += other.s2

    def all_reduce(self, info: DistInfo) -> None:
        """Sum the window moments of every rank in place on every rank."""
        if info.world <= 1:
            return
        count = torch.tensor([self.count], dtype=torch.float64)
        total = all_reduce_sum(torch.cat([count, self.s1.reshape(-1), self.s2.reshape(-1)]), info)
        self.count = float(total[0])
        self.s1 = total[1 : 1 + self.s1.numel()].reshape(self.s1.shape).clone()
        self.s2 = total[1 + self.s1.numel() :].reshape(self.s2.shape).clone()

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def distances(self) -> torch.Tensor:
        """Gaussian distance between the identity windows and each element's windows ``(G,)``."""
        mean = self.s1 / self.count
        cov = self.s2 / self.count - mean[:, :, None] * mean[:, None, :]
        return torch.stack([gaussian_distance(mean[0], cov[0], mean[g], cov[g]) for g in range(self.order)])


def _psd_sqrt(cov: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(cov)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def gaussian_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """Frechet distance ``|mu1-mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)``: squared W2 of Gaussians."""
    root = _psd_sqrt(cov1)
    cross = torch.linalg.eigvalsh(root @ cov2 @ root).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * cross
    return value.clamp_min(0)


def fit_mesh(meshes, values) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit ``eps(h) = eps0 + c h^2`` (Theorem 3.6's discretisation term).

    ``values`` is ``(len(meshes),)`` or ``(len(meshes), B)`` for bootstrap replicates;
    returns ``eps0, c`` (scalars or ``(B,)`` arrays).
    """
    h = np.asarray(meshes, dtype=np.float64)
    if len(np.unique(h)) < 2:
        raise ValueError("the h^2 fit needs at least two distinct mesh sizes")
    design = np.stack([np.ones_like(h), h**2], axis=1)
    coef, *_ = np.linalg.lstsq(design, np.asarray(values, dtype=np.float64), rcond=None)
    return coef[0], coef[1]


def p_value(observed: float, null: np.ndarray) -> float:
    """Permutation p-value ``(1 + #{null >= observed}) / (1 + B)``."""
    null = np.asarray(null)
    return float((1 + np.sum(null >= observed)) / (1 + len(null)))
