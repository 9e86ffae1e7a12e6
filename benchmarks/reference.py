"""A slow, independent reference of the default symmetry-error estimator, for tests and benchmarks.

It computes what :func:`symmetry.measure_dataset` reports per group element (the unbiased squared
MMD of docs/symmetry.md) one image, one group element and one window at a time, in plain
NumPy: window positions from the group matrix, Keys bicubic (a = -0.5) interpolation
written out tap by tap (or ``scipy.ndimage.map_coordinates(order=1)`` for bilinear), the
mean removed, the random Fourier features of that window and the U-statistic over images.
Only the random draws are shared with the library (the window centres' NumPy seed and the
random-feature parameters), so that both see the same windows and the same kernel. It is
written for clarity, not speed: it is the baseline the batched estimator is timed against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from symmetry.features import RandomFourierFeatures
from symmetry.groups import Group, get_group

KEYS_A = -0.5
MARGIN = {"bicubic": 2, "bilinear": 1}  # pixels a sample may read beyond its position


def disk_lattice(radius: float, mesh: float) -> np.ndarray:
    """Offsets ``(x, y)`` in mesh units of the lattice points within ``radius`` (row-major, y up)."""
    n = int(math.floor(radius / mesh + 1e-9))
    pts = [
        (x, y)
        for y in range(n, -n - 1, -1)
        for x in range(-n, n + 1)
        if (x * x + y * y) * mesh * mesh <= radius * radius + 1e-9
    ]
    return np.asarray(pts, dtype=np.float64)


def keys_weight(s: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5."""
    s = np.abs(s)
    a = KEYS_A
    near = (a + 2) * s**3 - (a + 3) * s**2 + 1
    far = a * s**3 - 5 * a * s**2 + 8 * a * s - 4 * a
    return np.where(s <= 1, near, np.where(s < 2, far, 0.0))


def bicubic(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Keys bicubic samples of ``image`` ``(C, H, W)`` at pixel positions; taps clamped to the border."""
    c, h, w = image.shape
    r0, q0 = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    taps = (-1, 0, 1, 2)
    row_weights = [keys_weight(rows - (r0 + d)) for d in taps]
    col_weights = [keys_weight(cols - (q0 + d)) for d in taps]
    row_index = [np.clip(r0 + d, 0, h - 1) for d in taps]
    col_index = [np.clip(q0 + d, 0, w - 1) for d in taps]
    out = np.zeros((c, len(rows)))
    for ri, wr in zip(row_index, row_weights):
        for qi, wq in zip(col_index, col_weights):
            out += image[:, ri, qi] * (wr * wq)
    return out


def bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear samples via ``scipy.ndimage.map_coordinates(order=1)``, border pixels repeated."""
    return np.stack(
        [ndimage.map_coordinates(ch, [rows, cols], order=1, mode="nearest", prefilter=False) for ch in image]
    )


class ReferenceMMD:
    """The default estimator written window by window; :meth:`run` returns eps per element for each mesh."""

    def __init__(
        self,
        group: str | Group,
        meshes: Sequence[float],
        *,
        bandwidth: float,
        radius: float = 8.0,
        windows: int = 128,
        features: int = 512,
        seed: int = 0,
        interpolation: str = "bicubic",
    ):
        if interpolation not in MARGIN:
            raise ValueError(f"the reference implements bicubic and bilinear, not {interpolation!r}")
        self.group = group if isinstance(group, Group) else get_group(group)
        self.matrices = np.asarray([e.matrix for e in self.group], dtype=np.float64)  # (G, 2, 2)
        self.meshes = [float(h) for h in meshes]
        self.bandwidth, self.radius, self.windows, self.features = bandwidth, radius, windows, features
        self.seed, self.interpolation = seed, interpolation
        self.sample = bicubic if interpolation == "bicubic" else bilinear
        self.offsets = {h: disk_lattice(radius, h) for h in self.meshes}
        self._rff = None

    def _features(self, channels: int) -> None:
        """Projections ``(D, C*P)`` per mesh from the library's random-feature draws (same seed)."""
        feature_seed = int(np.random.default_rng([self.seed, 11]).integers(2**62))
        rff = RandomFourierFeatures(self.features, channels, self.bandwidth, feature_seed)
        freq, mode_phase, amp = rff.freq.numpy(), rff.mode_phase.numpy(), rff.amp.numpy()
        self.phase, self.scale = rff.phase.numpy(), math.sqrt(2.0 / self.features)
        self.proj = {}
        for h, off in self.offsets.items():
            x = h * off  # physical positions of the window's points
            basis = np.cos(np.einsum("kjd,pd->kjp", freq, x) + mode_phase[..., None])  # omega_k's cosines
            self.proj[h] = h * np.einsum("kcj,kjp->kcp", amp, basis).reshape(self.features, -1)
        self._rff = channels

    def centres(self, rasters: list[np.ndarray], index: int) -> np.ndarray:
        """Physical window centres ``(M, 2)`` (x, y) of image ``index``, shared by every mesh and element."""
        half = np.full(2, np.inf)
        for h, raster in zip(self.meshes, rasters):
            reach = self.radius / h + MARGIN[self.interpolation]
            rows, cols = raster.shape[-2:]
            if min(rows, cols) < 2 * reach + 1:
                raise ValueError(f"image {index} is too small for windows of radius {self.radius} at mesh {h}")
            half = np.minimum(half, [((cols - 1) / 2 - reach) * h, ((rows - 1) / 2 - reach) * h])
        return np.random.default_rng([self.seed, index]).uniform(-half, half, (self.windows, 2))

    def window(self, raster: np.ndarray, h: float, centre: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """One mean-removed, area-weighted window on the grid moved by ``A^-1``, flattened to ``(C*P,)``."""
        rows, cols = raster.shape[-2:]
        moved = self.offsets[h] @ matrix  # each offset times A^-1 = A^T (orthogonal)
        r = (rows - 1) / 2 - centre[1] / h - moved[:, 1]
        q = (cols - 1) / 2 + centre[0] / h + moved[:, 0]
        values = self.sample(raster, r, q)  # (C, P)
        values = values - values.mean(axis=1, keepdims=True)
        return (h * values).reshape(-1)

    def image_differences(self, source, index: int) -> list[np.ndarray]:
        """``d_n(A) = sum over windows of z(w_A) - z(w)``, ``(G, D)`` for each mesh."""
        rasters = [np.asarray(source.at_mesh(h), dtype=np.float64) for h in self.meshes]
        if self._rff is None:
            self._features(rasters[0].shape[0])
        centres = self.centres(rasters, index)
        out = []
        for h, raster in zip(self.meshes, rasters):
            d = np.zeros((len(self.matrices), self.features))
            for m in range(self.windows):
                z0 = None
                for g, matrix in enumerate(self.matrices):
                    w = self.window(raster, h, centres[m], matrix)
                    z = self.scale * np.cos(self.proj[h] @ w + self.phase)
                    if z0 is None:
                        z0 = z  # the identity comes first in every group
                    d[g] += z - z0
            out.append(d)
        return out

    def run(self, sources) -> dict[float, np.ndarray]:
        """Unbiased eps per group element ``(G,)`` (identity first) for every mesh."""
        sums = {h: 0.0 for h in self.meshes}
        squares = {h: 0.0 for h in self.meshes}
        for index, source in enumerate(sources):
            for h, d in zip(self.meshes, self.image_differences(source, index)):
                sums[h] = sums[h] + d
                squares[h] = squares[h] + (d * d).sum(-1)
        n, m = len(sources), self.windows
        denom = (n * m) ** 2 - n * m * m
        return {h: ((sums[h] ** 2).sum(-1) - squares[h]) / denom for h in self.meshes}
