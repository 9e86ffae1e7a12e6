"""Per-image symmetry error and the deformation that best aligns an image with a group (theory.md, section 4).

The per-sample view of the symmetry error, the quantity SA-Conv adapts to (theory.md, section 3).
For one image ``x`` and a deformation ``D = R(theta0) diag(cx, cy)`` (SA-Conv's ``D_w``, see
:func:`analysis.models.inverse_deformation`), the *aligned* image is ``y = pi_D^-1 x``,
``y(q) = x(D q)``. An SA layer with deformation ``D`` evaluates the filter for element ``A`` on
``A^-1 D^-1 delta``; in the continuum it is ``pi_D`` of the equivariant layer applied to ``y``,
so it is equivariant to ``D G D^-1`` and fits ``x`` best when ``y`` is G-symmetric. Hence

    aligned_error(D) = max over A in G of  d(P_y, pi~_A P_y),

with ``P_y`` the distribution of ``y``'s disk windows: windows of ``x`` sampled on the deformed
grids ``D delta`` (identity) and ``D A^-1 delta`` (element ``A``). ``self_symmetry_error`` is
the value at ``D = I``; :func:`best_alignment` minimises over ``D`` on a vectorised grid, then
refines locally. Two distances ``d`` (``AlignmentSettings.distance``):

- ``covariance`` (default): the windows' second moments, i.e. the image's autocovariance ``C_x``
  estimated from every pixel pair, ``eps_cov(A; D) = ||C_y - C_y o A^-1||^2 / ||C_y||^2`` with
  ``C_y(tau) = C_x(D tau)`` over lags ``|tau| <= 2 radius`` (the per-image form of
  ``theory.optimal.covariance_symmetry_error``). Blind to half-turn asymmetries, which no
  ``D`` can change anyway (``-I`` commutes with every ``D``).
- ``mmd``: the project's squared kernel MMD (``symmetry.estimators``) between one image's
  ``m`` paired windows at random centres, unbiased (a U-statistic over pairs of windows, mean 0
  for a symmetric image). It sees every moment but, with the few windows one image offers, it
  is far noisier: on ``synthetic:deformed`` images it recovers the known stretch much worse
  (experiment ``sa_alignment``).

What is identifiable. For a rotation group, ``D`` and ``D Q`` align equally well whenever
``Q`` normalises ``G`` (any rotation, reflection or isotropic scaling), so only the
stretch ``D D^T`` up to scale is defined: ``log(cx / cy)`` and the angle ``theta0`` of the
stretch axes. We fix ``cx * cy = 1``. With the quarter turn in ``G``,
``(theta0 + pi/2, cx, cy)`` is equivalent to ``(theta0, cy, cx)``, so ``theta0`` is searched
in ``[0, pi/2)`` (``= 2 pi / N`` for rot4) with ``log(cx/cy)`` of either sign; without it,
in ``[0, pi)``. A pure rotation (``cx = cy``) commutes with every rotation group, so a
rotated, otherwise symmetric image is not misaligned at all: the angle is identifiable
only through the anisotropy. The random features come in orbits of D4
(:class:`symmetry.features.RandomFourierFeatures`), so the kernel is exactly invariant under
the grid-exact elements of ``G`` (lattice permutations) and these equivalences hold exactly on the grid.
"""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import abc
import argparse
import math
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from symmetry.command import default_split
from symmetry.datasets import load_dataset
from symmetry.decoders import IMAGE_EXTENSIONS
from symmetry.errors import DataError, UsageError
from symmetry.features import RandomFourierFeatures, median_bandwidth
from symmetry.groups import Group, GroupElement, get_group
from symmetry.io import atomic_write_text, check_outputs_apart_from_inputs, check_writable, output_lock
from symmetry.locations import DATA_ROOT_HELP
from symmetry.runtime import cli_entry, resolve_device, set_threads
from symmetry.settings import LIMITS, MAX_RADIUS, Settings, check_meshes
from symmetry.sources import first_images
from symmetry.streams import rng, seed_of
from symmetry.transforms import INTERPOLATIONS, SUPPORT_MARGIN, deformation_matrix, disk_offsets, interpolate

QUARTER_TURN = ((0.0, -1.0), (1.0, 0.0))
COLUMNS = (
    "name",
    "self_symmetry_error",
    "theta0",
    "cx",
    "cy",
    "aligned_error",
    "log_ratio",
    "self_symmetry_error_mean",
    "aligned_error_mean",
)


@dataclass(frozen=True)
class AlignmentSettings:
    """Windows, kernel and search grid of :func:`best_alignment`."""

    radius: float = 6.0  # window radius rho in native pixels (of the aligned image)
    windows: int = 64  # paired windows per image (the same centres for every candidate D)
    features: int = 256  # random Fourier features (a multiple of 8: orbits of the quarter turns and flips)
    bandwidth: float | None = None  # kernel sigma; None: median rule over the first images
    seed: int = 0
    interpolation: str = "bicubic"
    angles: int = 8  # coarse grid over theta0 in [0, period)
    scales: int = 7  # coarse grid over log(cx / cy) in [-max_log_ratio, max_log_ratio] (odd: includes 0)
    max_log_ratio: float = 0.9
    refine: int = 3  # rounds of local 3 x 3 refinement, each halving the step
    objective: str = "mean"  # minimise the mean (smoother) or the worst ("worst", eps_G) over G's non-identity elements
    distance: str = "covariance"  # "covariance" (eps_cov of the autocovariance) or "mmd" (kernel MMD of windows)


def deformation(theta0, cx, cy) -> torch.Tensor:
    """``D = R(theta0) diag(cx, cy)`` ``(..., 2, 2)`` in float64: :func:`symmetry.transforms.deformation_matrix`."""
    return deformation_matrix(theta0, cx, cy)


def angle_period(group: Group) -> float:
    """Period of ``theta0``: ``pi/2`` when ``G`` holds the quarter turn (then with ``cx <-> cy``), else ``pi``."""
    return math.pi / 2 if group.contains(GroupElement("rot90", QUARTER_TURN)) else math.pi


def _resolve_group(group: str | Group) -> Group:
    if isinstance(group, Group):
        return group
    return get_group(group)


class _Aligner(abc.ABC):
    """Per-image symmetry error ``(K, G)`` of the aligned image ``pi_D^-1 x`` for ``K`` candidate deformations.

    Two distances implement it: :class:`WindowAligner` (kernel MMD) and :class:`CovarianceAligner`.
    """

    source: object
    group: Group
    settings: AlignmentSettings

    @abc.abstractmethod
    def errors(self, deformations: torch.Tensor) -> torch.Tensor:
        """``(K, G)`` errors for ``K`` deformations ``(K, 2, 2)``; column 0 is the identity element."""

    def objective(self, errors: torch.Tensor) -> torch.Tensor:
        """The minimised statistic over the non-identity elements: their mean or their worst (``eps_G``)."""
        rest = errors[:, 1:]
        if rest.shape[1] == 0:
            return torch.zeros(errors.shape[0], dtype=errors.dtype, device=errors.device)
        return rest.mean(1) if self.settings.objective == "mean" else rest.max(1).values


class WindowAligner(_Aligner):
    """The project's kernel MMD (theory.md, section 4) between one image's paired windows on deformed grids.

    Centres are uniform continuous points (from ``(seed, index)``) where every candidate
    window fits; windows are mean-removed and scaled by ``h`` (L2 norm as a Riemann sum), as
    in :func:`symmetry.estimators.image_windows`.
    """

    def __init__(
        self,
        source,
        group: Group,
        mesh: float,
        settings: AlignmentSettings,
        bandwidth: float,
        index: int = 0,
        device=None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.source, self.group, self.mesh, self.settings = source, group, float(mesh), settings
        self.device, self.dtype = device, dtype
        h = self.mesh
        self.offsets = disk_offsets(settings.radius, h)  # (P, 2) mesh units
        self.inverses = group.matrices().transpose(-1, -2)  # A^-1 (orthogonal)
        stretch = math.exp(settings.max_log_ratio / 2)  # largest singular value of a candidate D
        reach = settings.radius * stretch / h + SUPPORT_MARGIN[settings.interpolation]
        self.raster = source.at_mesh(h).to(device, dtype)
        if not torch.isfinite(self.raster).all():
            raise DataError(f"{source.name}: image has NaN or infinite pixels")
        rows, cols = self.raster.shape[-2:]
        if min(rows, cols) < 2 * reach + 1:
            raise DataError(
                f"{source.name}: {cols}x{rows} pixels at mesh {h:g} cannot hold a window of radius "
                f"{settings.radius:g} px stretched by {stretch:.2f} ({math.ceil(2 * reach + 1)} pixels); "
                "use a smaller radius or max_log_ratio"
            )
        self.rows, self.cols = rows, cols
        half = np.array([((cols - 1) / 2 - reach) * h, ((rows - 1) / 2 - reach) * h])
        self.centres = torch.from_numpy(
            rng(settings.seed, "windows", index).uniform(-half, half, (settings.windows, 2))
        )
        self.channels = self.raster.shape[0]
        self.features = _kernel_weights(self.offsets, h, self.channels, settings, bandwidth)

    def windows(self, deformations: torch.Tensor) -> torch.Tensor:
        """Windows ``(K, G, M, C*P)`` of the aligned images ``pi_D^-1 x``: grids ``D A^-1 delta``, one ``D`` per row."""
        grids = torch.einsum("kij,gjl->kgil", deformations.to(torch.float64), self.inverses)  # D A^-1
        h = self.mesh
        moved = torch.einsum("kgij,pj->kgpi", grids, self.offsets)  # mesh units
        pts = self.centres[None, None, :, None, :] / h + moved[:, :, None]  # (K, G, M, P, 2) x right, y up
        win = _sample(self.raster, pts.to(self.device, self.dtype), self.settings.interpolation)
        win = win - win.mean(dim=-1, keepdim=True)
        return (win * h).flatten(-2)

    def errors(self, deformations: torch.Tensor) -> torch.Tensor:
        """Unbiased per-image squared MMD ``(K, G)`` between the aligned windows and their ``A``-transforms.

        ``eps_A = (|sum_i delta_i|^2 - sum_i |delta_i|^2) / (m (m - 1))`` with
        ``delta_i = z(w_{A,i}) - z(w_i)`` over the image's ``m`` paired windows (pairs ``i != j``).
        """
        weights, phase, scale = self.features
        z = scale * torch.cos(
            self.windows(deformations) @ weights.to(self.device, self.dtype).T + phase.to(self.device, self.dtype)
        )
        delta = z - z[:, :1]  # (K, G, M, D)
        m = delta.shape[2]
        total = delta.sum(2)
        return ((total * total).sum(-1) - (delta * delta).sum((2, 3))) / (m * (m - 1))


class CovarianceAligner(_Aligner):
    """Covariance symmetry error of the aligned image (the per-image form of ``theory.optimal``'s ``eps_cov``).

    The windows' covariance of a stationary image is its autocovariance ``C_x``, estimated once from all
    pixel pairs (FFT, normalised by the overlap count). The aligned image has ``C_y(tau) = C_x(D tau)``, so

        eps_cov(A; D) = ||C_y - C_y o A^-1||^2 / ||C_y||^2   over lags ``|tau| <= 2 radius``,

    sampled at ``D A^-1 tau`` by bicubic interpolation of ``C_x``. It sees second moments only (blind to
    half-turn asymmetries, ``C(-tau) = C(tau)``; the half turn commutes with every ``D`` anyway), and, using
    every pixel pair instead of a few windows, it is far less noisy than the per-image MMD.
    """

    def __init__(
        self, source, group: Group, mesh: float, settings: AlignmentSettings, device=None, dtype=torch.float64
    ):
        self.source, self.group, self.mesh, self.settings = source, group, float(mesh), settings
        self.device, self.dtype = device, dtype
        h = self.mesh
        self.lags = disk_offsets(2 * settings.radius, h).to(device, dtype)  # (P, 2) mesh units
        self.inverses = group.matrices(dtype, device).transpose(-1, -2)
        stretch = math.exp(settings.max_log_ratio / 2)
        reach = math.ceil(2 * settings.radius * stretch / h) + SUPPORT_MARGIN[settings.interpolation]
        raster = source.at_mesh(h).to(device, dtype)
        if not torch.isfinite(raster).all():
            raise DataError(f"{source.name}: image has NaN or infinite pixels")
        rows, cols = raster.shape[-2:]
        if min(rows, cols) < 2 * reach + 1:
            raise DataError(
                f"{source.name}: {cols}x{rows} pixels at mesh {h:g} are too few for lags up to "
                f"{2 * settings.radius * stretch:.3g} px; use a smaller radius or max_log_ratio"
            )
        self.covariance = autocovariance(raster, reach)  # (1, 2 reach + 1, 2 reach + 1)
        if not float(self.covariance.abs().max()) > 0:
            raise DataError(f"{source.name}: the image is constant; its symmetry error is undefined")

    def errors(self, deformations: torch.Tensor) -> torch.Tensor:
        """``eps_cov(A; D)`` ``(K, G)`` (0 for the identity element)."""
        grids = torch.einsum("kij,gjl->kgil", deformations.to(self.device, self.dtype), self.inverses)  # D A^-1
        cov = _sample(self.covariance, torch.einsum("kgij,pj->kgpi", grids, self.lags), self.settings.interpolation)
        cov = cov[..., 0, :]  # (K, G, P)
        diff = (cov - cov[:, :1]).square().sum(-1)
        return diff / cov[:, :1].square().sum(-1)


def autocovariance(raster: torch.Tensor, reach: int) -> torch.Tensor:
    """``C(tau) = mean_p x(p) x(p + tau)`` of the mean-removed image summed over channels, lags ``|tau_i| <= reach``.

    Returns ``(1, 2 reach + 1, 2 reach + 1)`` indexed like an image centred on lag 0 (rows down = ``-y``, columns
    = ``x``), each lag normalised by its number of overlapping pixel pairs (FFT with zero padding).
    """
    x = raster - raster.mean(dim=(-2, -1), keepdim=True)
    rows, cols = x.shape[-2:]
    size = (rows + reach + 1, cols + reach + 1)
    spec = torch.fft.rfft2(x, s=size)
    corr = torch.fft.irfft2(spec * spec.conj(), s=size).sum(0)
    ones = torch.fft.rfft2(torch.ones_like(x[0]), s=size)
    count = torch.fft.irfft2(ones * ones.conj(), s=size)
    shift = lambda a: torch.roll(a, (reach, reach), (0, 1))[: 2 * reach + 1, : 2 * reach + 1]  # noqa: E731
    return (shift(corr) / shift(count).round())[None]


def _sample(raster: torch.Tensor, points: torch.Tensor, method: str) -> torch.Tensor:
    """``raster`` ``(C, H, W)`` at centred plane points ``(..., 2)`` (x right, y up, pixel units): ``(..., C, P)``.

    :func:`symmetry.transforms.interpolate` about the raster's centre (taps out of frame clamped to the border).
    """
    c, rows, cols = raster.shape
    out = interpolate(raster, (rows - 1) / 2 - points[..., 1], (cols - 1) / 2 + points[..., 0], method)  # (C, ...)
    return out.movedim(0, -2)


def _kernel_weights(offsets, mesh, channels, settings, bandwidth):
    """Random-feature projection ``(D, C*P)``, phases ``(D,)`` and scale of the window lattice ``offsets`` at ``mesh``.

    The features come in D4 orbits (feature ``(j, q)`` reads the window through ``Q_q``), so the kernel is
    exactly invariant when both windows are permuted by a lattice symmetry, in particular by the grid-exact
    elements of ``G``.
    """
    rff = RandomFourierFeatures(settings.features, channels, bandwidth, seed_of(settings.seed, "features"))
    return rff.weights(mesh * offsets, mesh), rff.phase, rff.scale


def _candidates(thetas: torch.Tensor, log_ratios: torch.Tensor) -> torch.Tensor:
    return deformation(thetas, torch.exp(log_ratios / 2), torch.exp(-log_ratios / 2))


def canonical(theta0, log_ratio, period: float = math.pi / 2):
    """``(theta0 mod period, log_ratio)``, ``log(cx/cy)`` negated per odd quarter turn removed (``period = pi/2``)."""
    theta0, log_ratio = np.asarray(theta0, dtype=float), np.asarray(log_ratio, dtype=float)
    turns = np.floor(theta0 / period)
    sign = np.where(turns % 2 == 1, -1.0, 1.0) if math.isclose(period, math.pi / 2) else 1.0
    return theta0 - turns * period, log_ratio * sign


def match_to(theta0, log_ratio, reference, period: float = math.pi / 2):
    """The representative of ``(theta0, log_ratio)`` nearest to the angles ``reference``: ``(angle error, log_ratio)``.

    The angle error lies in ``[-period/2, period/2]``; ``log_ratio`` changes sign with each
    quarter turn moved (``period = pi/2``), so it can then be compared with the reference's.
    """
    theta0, log_ratio = np.asarray(theta0, dtype=float), np.asarray(log_ratio, dtype=float)
    turns = np.round((np.asarray(reference, dtype=float) - theta0) / period)
    sign = np.where(turns % 2 == 1, -1.0, 1.0) if math.isclose(period, math.pi / 2) else 1.0
    return theta0 + turns * period - reference, log_ratio * sign


def circular_correlation(a, b, period: float = 2 * math.pi) -> float:
    """Jammalamadaka-SenGupta circular correlation of two angle samples defined modulo ``period``."""
    a = 2 * math.pi * np.asarray(a, dtype=float) / period
    b = 2 * math.pi * np.asarray(b, dtype=float) / period
    sa = np.sin(a - np.angle(np.exp(1j * a).mean()))
    sb = np.sin(b - np.angle(np.exp(1j * b).mean()))
    den = math.sqrt(float((sa * sa).sum() * (sb * sb).sum()))
    return float((sa * sb).sum() / den) if den > 0 else math.nan


def align_image(aligner: _Aligner) -> dict:
    """Coarse grid over ``(theta0, log(cx/cy))``, then ``refine`` rounds of a local 3 x 3 grid (halving the step)."""
    s = aligner.settings
    period = angle_period(aligner.group)
    thetas = torch.arange(s.angles, dtype=torch.float64) * (period / s.angles)
    ratios = torch.linspace(-s.max_log_ratio, s.max_log_ratio, s.scales, dtype=torch.float64)
    tt, rr = torch.meshgrid(thetas, ratios[ratios != 0], indexing="ij")
    grid_t = torch.cat([torch.zeros(1, dtype=torch.float64), tt.reshape(-1)])  # D = I first (theta is moot at cx = cy)
    grid_r = torch.cat([torch.zeros(1, dtype=torch.float64), rr.reshape(-1)])
    errors = aligner.errors(_candidates(grid_t, grid_r)).cpu()
    identity = errors[0]
    score = aligner.objective(errors)
    best = int(score.argmin())
    theta, ratio, best_err, best_score = float(grid_t[best]), float(grid_r[best]), errors[best], float(score[best])
    step_t, step_r = period / s.angles / 2, (2 * s.max_log_ratio / max(s.scales - 1, 1)) / 2
    offsets = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    for _ in range(s.refine):
        ot, orr = torch.meshgrid(offsets * step_t, offsets * step_r, indexing="ij")
        cand_t = theta + ot.reshape(-1)
        cand_r = (ratio + orr.reshape(-1)).clamp(-s.max_log_ratio, s.max_log_ratio)
        errs = aligner.errors(_candidates(cand_t, cand_r)).cpu()
        sc = aligner.objective(errs)
        k = int(sc.argmin())
        if float(sc[k]) < best_score:
            theta, ratio, best_err, best_score = float(cand_t[k]), float(cand_r[k]), errs[k], float(sc[k])
        step_t, step_r = step_t / 2, step_r / 2
    theta, ratio = canonical(theta, ratio, period)
    theta, ratio = float(theta), float(ratio)
    return {
        "name": aligner.source.name,
        "self_symmetry_error": float(identity[1:].max()) if len(identity) > 1 else 0.0,
        "theta0": theta,
        "cx": math.exp(ratio / 2),
        "cy": math.exp(-ratio / 2),
        "aligned_error": float(best_err[1:].max()) if len(best_err) > 1 else 0.0,
        "log_ratio": ratio,
        "self_symmetry_error_mean": float(identity[1:].mean()) if len(identity) > 1 else 0.0,
        "aligned_error_mean": float(best_err[1:].mean()) if len(best_err) > 1 else 0.0,
    }


def make_aligner(
    source, group: Group, mesh: float, settings: AlignmentSettings, bandwidth=None, index=0, device=None, dtype=None
) -> _Aligner:
    """The aligner of ``settings.distance`` for one image (``bandwidth``: the MMD kernel's sigma)."""
    dtype = dtype or torch.float64
    if settings.distance == "covariance":
        return CovarianceAligner(source, group, mesh, settings, device, dtype)
    if bandwidth is None:
        pilot = Settings(radius=settings.radius, seed=settings.seed, interpolation=settings.interpolation)
        bandwidth = median_bandwidth([source], pilot, device)
    return WindowAligner(source, group, mesh, settings, bandwidth, index, device, dtype)


def _check(settings: AlignmentSettings, mesh: float) -> None:
    if not mesh > 0 or not settings.radius > 0:
        raise UsageError(f"mesh and radius must be > 0, got mesh={mesh:g}, radius={settings.radius:g}")
    if settings.windows < 2 or settings.angles < 1 or settings.scales < 1:
        raise UsageError("windows must be >= 2 and angles, scales >= 1")
    if settings.features < 8 or settings.features % 8:
        raise UsageError(
            f"features must be a positive multiple of 8 (orbits of quarter turns and flips), got {settings.features}"
        )
    if settings.refine < 0 or settings.max_log_ratio < 0:
        raise UsageError("refine and max_log_ratio must be >= 0")
    if settings.interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {settings.interpolation!r}; choose {', '.join(INTERPOLATIONS)}")
    if settings.distance not in ("covariance", "mmd"):
        raise UsageError(f"distance must be covariance or mmd, got {settings.distance!r}")
    if settings.objective not in ("mean", "worst"):
        raise UsageError(f"objective must be mean or worst, got {settings.objective!r}")
    if settings.bandwidth is not None and not settings.bandwidth > 0:
        raise UsageError(f"bandwidth must be > 0, got {settings.bandwidth:g}")


def best_alignment(
    dataset_or_sources,
    group: str | Group = "rot4",
    mesh: float = 1.0,
    *,
    settings: AlignmentSettings | None = None,
    data_root=None,
    split: str = "train",
    channels: str = "gray",
    max_images: int | None = None,
    device="auto",
    dtype: torch.dtype = torch.float64,
    **overrides,
) -> pd.DataFrame:
    """One row per image: its self-symmetry error and the ``(theta0, cx, cy)`` that best aligns it with ``group``.

    ``dataset_or_sources`` is a dataset spec (``symmetry.datasets.load_dataset``) or a sequence
    of sources with ``name`` and ``at_mesh``. ``overrides`` set :class:`AlignmentSettings`
    fields (e.g. ``windows=32``). Columns: :data:`COLUMNS` (errors are squared MMD;
    ``*_mean`` average over the non-identity elements, the others are the worst, eps_G).
    """
    settings = AlignmentSettings(**{**(settings or AlignmentSettings()).__dict__, **overrides})
    _check(settings, float(mesh))
    grp = _resolve_group(group)
    sources = dataset_or_sources
    if isinstance(dataset_or_sources, str):
        sources = load_dataset(dataset_or_sources, data_root=data_root, split=split, channels=channels)

    sources = first_images(list(sources), max_images)
    if not sources:
        raise DataError("no images to align")
    dev = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
    bandwidth = settings.bandwidth
    if bandwidth is None and settings.distance == "mmd":
        pilot = Settings(radius=settings.radius, seed=settings.seed, interpolation=settings.interpolation)
        bandwidth = median_bandwidth(sources, pilot, dev)
    rows = []
    for index, source in enumerate(sources):
        rows.append(align_image(make_aligner(source, grp, mesh, settings, bandwidth, index, dev, dtype)))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs.update(group=grp.name, mesh=float(mesh), bandwidth=bandwidth, period=angle_period(grp))
    return frame


# ---- command line ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"error: {message}; see --help\n")


def _check_options(args: argparse.Namespace) -> None:
    """Parse-time ranges: a finite radius, a mesh whose windows fit in memory, windows within bounds."""

    if not (math.isfinite(args.radius) and 0 < args.radius <= MAX_RADIUS):
        raise UsageError(f"--radius must be > 0, finite and at most {MAX_RADIUS:g} pixels, got {args.radius:g}")
    check_meshes([args.mesh], args.radius)
    if not 2 <= args.windows <= LIMITS["windows"]:
        raise UsageError(f"--windows must be between 2 and {LIMITS['windows']:,}, got {args.windows}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")


@cli_entry
def main(argv=None) -> int:
    """``python -m symmetry.alignment --dataset SPEC --group rot4 [--csv out.csv]``."""
    p = _Parser(prog="python -m symmetry.alignment", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="skimage", help="dataset spec (see python -m symmetry.measure --list-datasets)")
    p.add_argument("--group", default="rot4", help="group to align with (default rot4)")
    p.add_argument("--mesh", type=float, default=1.0, help="mesh size h, native pixels per sample (default 1)")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--split", default=None, help="split of rain100l/div2k: train, valid or test (default: train)")
    p.add_argument("--max-images", type=int)
    p.add_argument("--radius", type=float, default=AlignmentSettings.radius)
    p.add_argument("--distance", choices=("covariance", "mmd"), default="covariance", help="default covariance")
    p.add_argument("--windows", type=int, default=AlignmentSettings.windows, help="windows per image (mmd)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--csv", help="write the table to this CSV file")
    args = p.parse_args(argv)
    _check_options(args)
    set_threads()
    if args.csv:
        check_outputs_apart_from_inputs({"--csv": args.csv}, args.dataset, IMAGE_EXTENSIONS)
        check_writable(args.csv, "--csv")  # before the work, not after it
    with output_lock(args.csv):  # a second alignment writing this CSV fails at once instead of after its work
        frame = best_alignment(
            args.dataset,
            args.group,
            args.mesh,
            data_root=args.data_root,
            split=default_split(args.dataset, args.split),
            max_images=args.max_images,
            device=args.device,
            radius=args.radius,
            distance=args.distance,
            windows=args.windows,
            seed=args.seed,
        )
        if args.csv:
            atomic_write_text(args.csv, frame.to_csv(index=False))
    period = math.degrees(angle_period(_resolve_group(args.group)))
    print(f"theta0 in radians, modulo {period:g} degrees; cx * cy = 1; errors: {args.distance} distance")
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
