"""Synthetic continuous images whose symmetry is known by construction.

Each image is a smooth function r: R^2 -> R, a sum of elongated Gaussian atoms
``a * exp(-u^2 / (2 s_u^2) - v^2 / (2 s_v^2))`` in the atom's rotated frame (u along
its long axis), at uniform random positions, evaluated analytically at any point, so
the raster at any mesh size ``h`` is exact (theory.md, section 1: ``Y_ij = r(x_ij)``).
An atom is symmetric under a half turn and under reflection about its axes, so the
symmetry of the dataset is the symmetry of its orientation distribution (mod 180 deg):

- ``isotropic``: uniform orientations: invariant under all of O(2) (eps = 0 for every group);
- ``vonmises``: orientations from a von Mises law around ``mu`` with concentration
  ``kappa`` (kappa = 0 is isotropic; the symmetry error grows with kappa); with mu = 0 it
  is still left-right and up-down symmetric, but not rotation symmetric;
- ``kfold``: a mixture of ``k`` von Mises laws at ``mu + 360 j / k`` degrees: invariant
  under ``rotK`` but not a finer rotation group (``k=4``: rot4 yes, rot8 no), and, with
  ``mu`` not a multiple of 45 degrees, not under flips either (chiral);
- ``deformed``: k-fold motifs (``k`` atoms at ``alpha + 360 j / k`` degrees crossing at one
  centre, ``alpha`` von Mises around ``mu``; each motif is rotK-symmetric, so each image, not
  only the distribution, is rotK-symmetric up to the random placement; ``atoms`` sets the same
  atom density as the other families) seen through a known per-image linear map
  ``D_n = R(theta_n) diag(cx_n, cy_n)`` (``cx_n cy_n = 1``), i.e. ``x_n(p) = y_n(D_n^-1 p)``, the
  parameterisation of SA-Conv's deformation ``D_w`` (theory.md, section 3). Each image is
  rotK-symmetric only once aligned by ``D_n``. ``theta_n`` is uniform in ``[0, pi)``,
  ``|log(cx_n / cy_n)|`` uniform in ``[stretch / 2, stretch]`` with a random sign, and
  ``(theta, cx, cy, log_ratio)`` are stored in each image's ``meta``.

Spec strings (``--dataset``): ``synthetic:NAME[,key=value...]``, e.g.
``synthetic:kfold,k=4,kappa=8,mu=20`` or ``synthetic:vonmises,kappa=2,n=32``.
Keys: n (images, 64), size (side in native pixels, 64), atoms (per image, 30),
kappa (16), mu (degrees, 0), k (4), long (atom s_u, 6.0), short (atom s_v, 1.2), seed (0);
``deformed`` also takes stretch (the largest ``|log(cx/cy)|``, 0.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from symmetry.errors import UsageError
from symmetry.sources import Dataset
from symmetry.transforms import deformation_matrix

FAMILIES = {
    "isotropic": "oriented atoms with uniform orientations: symmetric under every rotation and flip",
    "vonmises": "atoms oriented by a von Mises law (kappa sets the anisotropy): mirror- but not rotation-symmetric",
    "kfold": "atoms from a k-fold von Mises mixture: rotK-symmetric, not finer, chiral unless mu % 45 == 0",
    "deformed": "k-fold atom motifs through a known per-image R(theta) diag(cx, cy): rotK-symmetric once aligned",
}
DEFAULTS = {"n": 64, "size": 64, "atoms": 30, "kappa": 16.0, "mu": 0.0, "k": 4, "long": 6.0, "short": 1.2, "seed": 0}
_SPLIT_OFFSET = {"train": 0, "valid": 1_000_003, "test": 2_000_003}
FAMILY_DEFAULTS = {"deformed": {"stretch": 0.6}}
"""Parameters of one family only, beside :data:`DEFAULTS`."""
INTEGER_KEYS = ("n", "size", "atoms", "k", "seed")
LIMITS = {
    "n": (1, 1_000_000),
    "size": (1, 16_384),  # one raster at mesh 1 is size^2 float64 values
    "atoms": (1, 1_000_000),
    "k": (1, 360),
    "seed": (0, 2**63 - 1),
    "kappa": (0.0, math.inf),
    "mu": (-math.inf, math.inf),
    "long": (1e-6, 1e6),
    "short": (1e-6, 1e6),
    "stretch": (0.0, 6.0),  # the atoms reaching the frame grow like exp(stretch)
}
"""Closed range of each parameter (all must be finite); memory bounds keep a typo from exhausting RAM."""
MAX_TOTAL_ATOMS = 20_000_000
"""Upper bound on ``n * atoms`` (32 bytes per atom are held in memory)."""


@dataclass
class AtomField:
    """One synthetic continuous image, a sum of oriented anisotropic Gaussian atoms."""

    name: str
    size: float
    centres: torch.Tensor  # (K, 2) physical (x, y), origin at the image centre, y up
    angles: torch.Tensor  # (K,) radians
    amplitudes: torch.Tensor  # (K,)
    long: float
    short: float
    meta: dict = field(default_factory=dict)
    deform: torch.Tensor | None = None  # (2, 2) D: the field is r(D^-1 p) (family ``deformed``); None: identity

    def evaluate(self, points: torch.Tensor) -> torch.Tensor:
        """``r`` at physical points ``(..., 2)`` (x, y): returns ``(1, ...)``."""
        pts = points.to(torch.float64)
        shape = pts.shape[:-1]
        if self.deform is not None:
            pts = pts @ torch.linalg.inv(self.deform.to(torch.float64)).T  # D^-1 p
        p = pts.reshape(-1, 1, 2) - self.centres[None]  # (Q, K, 2)
        c, s = torch.cos(self.angles), torch.sin(self.angles)
        u = p[..., 0] * c + p[..., 1] * s
        v = -p[..., 0] * s + p[..., 1] * c
        val = torch.exp(-0.5 * (u / self.long) ** 2 - 0.5 * (v / self.short) ** 2) @ self.amplitudes
        return val.reshape(1, *shape)

    def lattice(self, mesh: float) -> torch.Tensor:
        """Physical coordinates ``(n, n, 2)`` of the mesh-``h`` lattice covering the image."""
        n = max(1, int(math.floor(self.size / mesh + 1e-9)))
        t = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * mesh
        y, x = torch.meshgrid(-t, t, indexing="ij")
        return torch.stack([x, y], dim=-1)

    def at_mesh(self, mesh: float) -> torch.Tensor:
        """The exact raster ``Y_ij = r(x_ij)`` at mesh ``mesh``: ``(1, n, n)``."""
        return self.evaluate(self.lattice(mesh))

    def load(self) -> torch.Tensor:
        return self.at_mesh(1.0)


def _orientations(family: str, rng: np.random.Generator, count: int, p: dict) -> np.ndarray:
    mu = math.radians(p["mu"])
    if family == "isotropic":
        return rng.uniform(0, 2 * math.pi, count)
    if family == "vonmises":
        return rng.vonmises(mu, p["kappa"], count) if p["kappa"] > 0 else rng.uniform(0, 2 * math.pi, count)
    # kfold: a von Mises around one of k equally spaced directions
    branch = rng.integers(0, int(p["k"]), count) * (2 * math.pi / int(p["k"]))
    noise = rng.vonmises(0.0, p["kappa"], count) if p["kappa"] > 0 else rng.uniform(0, 2 * math.pi, count)
    return mu + branch + noise


def _deformed_atoms(rng: np.random.Generator, p: dict, density: float):
    """One ``deformed`` image: k-fold motifs (``k`` atoms crossing at one centre) and its ``D = R(theta) diag(cx, cy)``.

    Motif centres are uniform, at the atom ``density`` of the other families, on the bounding box of the frame's
    preimage ``D^-1 [-size/2, size/2]^2`` widened by three atom lengths (what can reach into the frame).
    """
    theta = float(rng.uniform(0.0, math.pi))
    log_ratio = float(rng.choice([-1.0, 1.0]) * rng.uniform(p["stretch"] / 2, p["stretch"]))
    cx, cy = math.exp(log_ratio / 2), math.exp(-log_ratio / 2)
    deform = deformation_matrix(theta, cx, cy).numpy()  # R(theta) diag(cx, cy)
    corners = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]) * p["size"] / 2
    half = np.abs(corners @ np.linalg.inv(deform).T).max(axis=0) + 3 * p["long"]  # (x, y) half extents
    order = int(p["k"])
    motifs = max(1, math.ceil(density * 4 * half[0] * half[1] / order))
    centres = np.repeat(rng.uniform(-half, half, (motifs, 2)), order, axis=0)
    alpha = math.radians(p["mu"]) + (rng.vonmises(0.0, p["kappa"], motifs) if p["kappa"] > 0 else np.zeros(motifs))
    angles = (alpha[:, None] + 2 * math.pi * np.arange(order) / order).reshape(-1)
    amps = np.repeat(rng.choice([-1.0, 1.0], motifs) * rng.uniform(0.5, 1.0, motifs), order)
    truth = {"theta": theta, "cx": cx, "cy": cy, "log_ratio": log_ratio}
    return centres, angles, amps, torch.from_numpy(deform), truth


def make_fields(family: str, *, split: str = "train", **params) -> list[AtomField]:
    """Draw the images of a synthetic family (see the module docstring for parameters)."""
    p = check_params(family, params)
    if split not in _SPLIT_OFFSET:
        raise UsageError(f"synthetic split must be one of {', '.join(_SPLIT_OFFSET)}, got {split!r}")
    rng = np.random.default_rng([int(p["seed"]), _SPLIT_OFFSET.get(split, 0)])
    reach = p["size"] / 2 + 3 * p["long"]  # atoms just outside the frame still reach into it
    fields = []
    for i in range(int(p["n"])):
        k = int(p["atoms"])
        meta, deform = {"family": family, **p}, None
        if family == "deformed":
            centres, angles, amps, deform, truth = _deformed_atoms(rng, p, k / (2 * reach) ** 2)
            meta.update(truth)
        else:
            centres = rng.uniform(-reach, reach, (k, 2))
            angles = _orientations(family, rng, k, p)
            amps = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.0, k)
        fields.append(
            AtomField(
                name=f"{family}-{split}-{i:04d}",
                size=float(p["size"]),
                centres=torch.from_numpy(centres),
                angles=torch.from_numpy(np.asarray(angles, dtype=np.float64)),
                amplitudes=torch.from_numpy(amps),
                long=float(p["long"]),
                short=float(p["short"]),
                meta=meta,
                deform=deform,
            )
        )
    return fields


def check_params(family: str, params: dict) -> dict:
    """All parameters of ``family`` (defaults filled in), checked: known keys, finite numbers, whole numbers for
    :data:`INTEGER_KEYS`, each in its :data:`LIMITS` range; any problem is a one-line :class:`UsageError`."""
    if family not in FAMILIES:
        raise UsageError(f"unknown synthetic family {family!r}; choose one of {', '.join(FAMILIES)}")
    known = {**DEFAULTS, **FAMILY_DEFAULTS.get(family, {})}
    unknown = set(params) - set(known)
    if unknown:
        raise UsageError(f"unknown synthetic parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    p = {**known, **params}
    for key, value in p.items():
        low, high = LIMITS[key]
        whole = key in INTEGER_KEYS
        kind = "a whole number" if whole else "a finite number"
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or (whole and not float(value).is_integer()):
            raise UsageError(f"synthetic {key} must be {kind}, got {value!r}")
        if not low <= value <= high:
            bounds = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
            raise UsageError(f"synthetic {key} must be {bounds}, got {value:g}")
    if p["n"] * p["atoms"] > MAX_TOTAL_ATOMS:
        raise UsageError(
            f"synthetic n * atoms = {p['n'] * p['atoms']:g} exceeds {MAX_TOTAL_ATOMS} atoms in memory; "
            "use fewer images or atoms"
        )
    return p


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"synthetic:kfold,k=4,kappa=8"`` -> ``("kfold", {"k": 4, "kappa": 8.0})``, checked by :func:`check_params`."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    if not body:
        raise UsageError(f"synthetic dataset needs a family, e.g. synthetic:isotropic; families: {', '.join(FAMILIES)}")
    family, *pairs = body.split(",")
    if family not in FAMILIES:
        raise UsageError(f"unknown synthetic family {family!r} in {spec!r}; choose one of {', '.join(FAMILIES)}")
    known = {**DEFAULTS, **FAMILY_DEFAULTS.get(family, {})}
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise UsageError(
                f"bad synthetic parameter {pair!r} in {spec!r}; use key=value with keys {', '.join(known)}"
            )
        if key in params:
            raise UsageError(f"synthetic parameter {key} is given twice in {spec!r}; keep one")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"synthetic parameter {key} needs a number, got {value!r}") from None
        whole = key in INTEGER_KEYS and math.isfinite(number) and number.is_integer()
        params[key] = int(number) if whole else number
    check_params(family, params)
    return family, params


def load_synthetic(spec: str, split: str = "train") -> Dataset:
    """A :class:`symmetry.sources.Dataset` of synthetic fields from a spec string."""
    family, params = parse_spec(spec)
    fields = make_fields(family, split=split, **params)
    return Dataset(name=spec, sources=fields, description=FAMILIES[family])
