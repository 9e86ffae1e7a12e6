"""The measurement's settings: the one place where every default of ``symmetry.measure`` is written.

The Python API (:func:`symmetry.measurement.measure_dataset`) and the command line
(``python -m symmetry.measure``) both build a :class:`Settings` by name with
:meth:`Settings.from_options`, which also checks every value (finite, in range, integer
where needed) and raises a one-line :class:`~symmetry.errors.UsageError` otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from symmetry.errors import UsageError

DATASET = "skimage"
GROUPS = ("rot4", "flip", "flipud", "dih4")  # the embedded default: what the bundled photos can and cannot support
MESHES = (2.0, 1.0, 0.5)
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")

# Upper bounds where memory or time would explode (a user who needs more can say so in an issue).
LIMITS = {"windows": 100_000, "features": 65_536, "permutations": 1_000_000, "bootstrap": 1_000_000}
MIN_MESH, MAX_MESH = 1 / 16, 64.0
MAX_RADIUS = 4096.0
MAX_POINTS = 200_000  # points per window (radius / mesh)^2 * pi
MAX_BANDWIDTH = 100.0  # standardised units: intensities are O(1), so sigma = 100 is already a linear kernel
FEATURE_ORBIT = 8  # symmetry.features.ORBIT: random features come in orbits of D4
MIN_PERMUTATIONS = 20  # p = (1 + k) / (B + 1) >= 1 / (B + 1): B = 19 gives p >= 0.05, which cannot reject at 0.05
KERNELS = ("aggregate", "single")  # Settings.kernels: the aggregated default test, or one kernel (radius, bandwidth)

#: The kernels and scales of the aggregated default test (``kernels="aggregate"``; docs/symmetry.md, "The default
#: test"). Each component is one window radius (native px), one mesh (native px, multiplied by every ``--mesh``
#: value, whose default in this mode is 1), one kernel and its channels. The components' statistics are combined
#: the MMDAgg way (the smallest of their randomisation p-values, itself calibrated by the same null draws: one
#: threshold, not a union bound), so the test is about as powerful as the best component on each dataset.
#: The median-rule Gaussian on intensity windows sees texture orientation (zero-mean anisotropy) at three scales;
#: the linear-kernel limit (bandwidth 100) with the local-contrast channel sees a consistent layout (where bright
#: and textured regions are), the ``photos`` preset's statistic, at the same three scales.
AGGREGATE: tuple[dict, ...] = (
    dict(name="r8-median", radius=8.0, mesh=1.0, bandwidth="median", contrast=False, windows=128),
    dict(name="r16-median", radius=16.0, mesh=2.0, bandwidth="median", contrast=False, windows=128),
    dict(name="r32-median", radius=32.0, mesh=4.0, bandwidth="median", contrast=False, windows=128),
    dict(name="r8-linear", radius=8.0, mesh=2.0, bandwidth=100.0, contrast=True, windows=512),
    dict(name="r16-linear", radius=16.0, mesh=4.0, bandwidth=100.0, contrast=True, windows=512),
    dict(name="r32-linear", radius=32.0, mesh=8.0, bandwidth=100.0, contrast=True, windows=512),
)
#: Options that describe one kernel: given explicitly (and ``kernels`` not), they select ``kernels="single"``.
SINGLE_KERNEL_OPTIONS = ("radius", "bandwidth", "contrast", "exact", "windows")

#: Named recommended settings (``--preset NAME``, ``measure_dataset(..., preset=NAME)``): ``mesh`` and Settings
#: fields; options given explicitly override them. Chosen and measured in docs/symmetry.md ("Power on Rain100L").
PRESETS: dict[str, dict] = {
    # Natural photographs, to decide whether a group is a symmetry: windows of radius 16 px at mesh 4 (49 points per
    # channel: a window sees the coarse layout of a 32 px region), 512 windows per image, a local-contrast channel
    # beside the intensity (symmetry.contrast: where the texture is), and the linear-kernel limit of the fixed
    # Gaussian kernel (sigma = 100 standardised units: the MMD then compares mean windows, far more powerful for a
    # consistent top-bottom layout than a kernel of the windows' own width). Chosen on subsets of 25 clean Rain100L
    # test photos (selection draws only); its power on fresh subsets is in docs/symmetry.md ("Power on Rain100L").
    "photos": dict(mesh=(4.0,), radius=16.0, windows=512, bandwidth=100.0, contrast=True, kernels="single"),
}


def window_scale(radius: float) -> float:
    """``sqrt(pi) * radius``: the L2 norm of a unit-intensity disk window of ``radius`` native pixels.

    A *standardised* window is ``w / window_scale(radius)``: the mean-removed window (image
    intensities as loaded: 8-bit / 255, 16-bit / 65535, so in [0, 1]) divided by the square root
    of the disk's physical area ``pi rho^2``. Its squared norm is the window's mean square
    intensity (the per-pixel RMS contrast, squared), a fixed scale that involves no dataset
    statistic and does not change with the radius or the mesh.
    """
    return math.sqrt(math.pi) * float(radius)


@dataclass(frozen=True)
class Settings:
    """Estimator settings; every field is recorded in the report and in the checkpoint fingerprint.

    ``bandwidth`` chooses the Gaussian kernel ``exp(-|w - w'|^2 / (2 sigma^2))`` on windows:

    - ``"median"`` (default): ``sigma^2 = median |w - w'|^2`` over the first images' windows
      (:func:`symmetry.features.median_bandwidth`). Adapts to each dataset, so eps values of two
      datasets are measured with different kernels and are not comparable.
    - a number ``s > 0``: a fixed kernel in *standardised* units, ``sigma = s * window_scale(radius)``
      (:func:`window_scale`): ``s`` is the RMS per-pixel intensity difference of two windows at which
      the kernel falls to ``exp(-1/2)``. Intensities are the loader's (8-bit / 255), never rescaled by a
      dataset statistic, so the same ``s`` is the same kernel for every dataset (and every radius):
      eps is comparable across datasets. ``s = 0.1`` means 10% of the intensity range.
    """

    radius: float = 8.0  # window radius rho in native pixels (physical, fixed across meshes)
    windows: int = 128  # windows per image and mesh
    features: int = 512  # random Fourier features D
    bandwidth: float | str = "median"  # "median" (per dataset) or sigma in standardised units (class docstring)
    permutations: int = 999  # randomisation-null draws: p-values down to 1 / (permutations + 1)
    bootstrap: int = 200  # Poisson bootstrap draws over images
    seed: int = 0
    interpolation: str = "bicubic"
    frechet: bool = False  # also accumulate window moments for the Gaussian (Frechet) distance
    exact: bool = False  # evaluate transformed windows analytically (synthetic fields only): no interpolation
    alpha: float = 0.05  # level of the verdicts (one threshold per group, Holm over the groups)
    contrast: bool = False  # add a local-contrast channel to every window (symmetry.contrast; exact null kept)
    kernels: str = "aggregate"  # "aggregate": the AGGREGATE components under one threshold; "single": one kernel

    @classmethod
    def from_options(cls, **options) -> Settings:
        """Settings from keyword options; ``None`` means the default. Unknown names and bad values: UsageError."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise UsageError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        settings = cls(**{k: v for k, v in options.items() if v is not None})
        settings.check()
        return settings

    def replace(self, **changes) -> Settings:
        return Settings(**{**asdict(self), **changes})

    def check(self) -> None:
        """Raise a one-line UsageError for any value that would give a wrong or silent result."""
        _positive_finite("--radius", self.radius, MAX_RADIUS)
        for name in ("windows", "features"):
            _integer(f"--{name}", getattr(self, name), 1, LIMITS[name])
        if self.features % FEATURE_ORBIT:
            raise UsageError(
                f"--features must be a multiple of {FEATURE_ORBIT} (the random features come in orbits of the "
                f"window's quarter turns and flips), got {self.features}; e.g. {max(8, self.features // 8 * 8)}"
            )
        _integer(
            "--permutations",
            self.permutations,
            MIN_PERMUTATIONS,
            LIMITS["permutations"],
            f"a p-value below 0.05 needs >= {MIN_PERMUTATIONS}",
        )
        _integer("--bootstrap", self.bootstrap, 0, LIMITS["bootstrap"])
        _integer("--seed", self.seed, 0, 2**63 - 1)
        if isinstance(self.bandwidth, str):
            if self.bandwidth != "median":
                raise UsageError(
                    f"--bandwidth takes 'median' or a number in standardised units (e.g. 0.1), got {self.bandwidth!r}"
                )
        else:
            _positive_finite("--bandwidth", self.bandwidth, MAX_BANDWIDTH)
        if not isinstance(self.contrast, bool):
            raise UsageError(f"--contrast is a switch (true or false), got {self.contrast!r}")
        if self.contrast and self.exact:
            raise UsageError("the contrast channel is computed from sampled images; it cannot be combined with exact")
        if self.kernels not in KERNELS:
            raise UsageError(f"--kernels takes {' or '.join(KERNELS)}, got {self.kernels!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise UsageError(f"unknown interpolation {self.interpolation!r}; choose {', '.join(INTERPOLATIONS)}")
        if not (isinstance(self.alpha, (int, float)) and 0 < self.alpha < 1):
            raise UsageError(f"--alpha must be a level between 0 and 1 (e.g. 0.05), got {self.alpha!r}")
        floor = 1 / (self.permutations + 1)
        if floor >= self.alpha:
            raise UsageError(
                f"--permutations {self.permutations} gives p-values of at least {floor:.3g}, which can never fall "
                f"below --alpha {self.alpha:g}; use at least {math.floor(1 / self.alpha)} permutations"
            )


def preset_options(name: str | None) -> dict:
    """The options of a named preset (:data:`PRESETS`), ``mesh`` included; ``{}`` for None."""
    if name is None:
        return {}
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dict(PRESETS[name])


def check_meshes(meshes, radius: float) -> list[float]:
    """Mesh sizes as floats, each finite, in range, and not so fine that a window holds too many points."""
    meshes = [float(h) for h in meshes]
    if not meshes:
        raise UsageError("give at least one mesh size, e.g. --mesh 1")
    for h in meshes:
        if not h > 0:
            raise UsageError(f"mesh sizes must be > 0, got {h:g}")
        if not (math.isfinite(h) and MIN_MESH <= h <= MAX_MESH):
            raise UsageError(f"mesh sizes must be between {MIN_MESH:g} and {MAX_MESH:g} native pixels, got {h:g}")
        if math.pi * (radius / h) ** 2 > MAX_POINTS:
            raise UsageError(
                f"a window of radius {radius:g} px at mesh {h:g} has about {math.pi * (radius / h) ** 2:,.0f} points "
                f"(limit {MAX_POINTS:,}); use a coarser mesh or a smaller --radius"
            )
    if len(set(meshes)) != len(meshes):
        raise UsageError(f"mesh sizes repeat: {', '.join(f'{h:g}' for h in meshes)}")
    return meshes


def _positive_finite(option: str, value, upper: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise UsageError(f"{option} must be > 0 and finite, got {value!r}")
    if value > upper:
        raise UsageError(f"{option} must be at most {upper:g}, got {value:g}")


def _integer(option: str, value, lower: int, upper: int, why: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{option} must be an integer, got {value!r}")
    if not lower <= value <= upper:
        hint = f" ({why})" if why else ""
        raise UsageError(f"{option} must be between {lower} and {upper:,}{hint}, got {value}")
