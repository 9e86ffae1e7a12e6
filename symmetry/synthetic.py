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
  ``mu`` not a multiple of 45 degrees, not under flips either (chiral).

Spec strings (``--dataset``): ``synthetic:NAME[,key=value...]``, e.g.
``synthetic:kfold,k=4,kappa=8,mu=20`` or ``synthetic:vonmises,kappa=2,n=32``.
Keys: n (images, 64), size (side in native pixels, 64), atoms (per image, 30),
kappa (16), mu (degrees, 0), k (4), long (atom s_u, 6.0), short (atom s_v, 1.2), seed (0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from symmetry.errors import UsageError

FAMILIES = {
    "isotropic": "oriented atoms with uniform orientations: symmetric under every rotation and flip",
    "vonmises": "atoms oriented by a von Mises law (kappa sets the anisotropy): mirror- but not rotation-symmetric",
    "kfold": "atoms from a k-fold von Mises mixture: rotK-symmetric, not finer, chiral unless mu % 45 == 0",
}
DEFAULTS = {"n": 64, "size": 64, "atoms": 30, "kappa": 16.0, "mu": 0.0, "k": 4, "long": 6.0, "short": 1.2, "seed": 0}
_SPLIT_OFFSET = {"train": 0, "valid": 1_000_003, "test": 2_000_003}


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

    def evaluate(self, points: torch.Tensor) -> torch.Tensor:
        """``r`` at physical points ``(..., 2)`` (x, y): returns ``(1, ...)``."""
        pts = points.to(torch.float64)
        shape = pts.shape[:-1]
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


def make_fields(family: str, *, split: str = "train", **params) -> list[AtomField]:
    """Draw the images of a synthetic family (see the module docstring for parameters)."""
    if family not in FAMILIES:
        raise UsageError(f"unknown synthetic family {family!r}; choose one of {', '.join(FAMILIES)}")
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise UsageError(f"unknown synthetic parameter(s) {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    if p["n"] < 1 or p["size"] <= 0 or p["atoms"] < 1 or p["long"] <= 0 or p["short"] <= 0 or p["k"] < 1:
        raise UsageError("synthetic parameters n, size, atoms, k, long, short must be positive")
    if p["kappa"] < 0:
        raise UsageError(f"synthetic kappa must be >= 0, got {p['kappa']}")
    rng = np.random.default_rng([int(p["seed"]), _SPLIT_OFFSET.get(split, 0)])
    reach = p["size"] / 2 + 3 * p["long"]  # atoms just outside the frame still reach into it
    fields = []
    for i in range(int(p["n"])):
        k = int(p["atoms"])
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
                meta={"family": family, **p},
            )
        )
    return fields


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"synthetic:kfold,k=4,kappa=8"`` -> ``("kfold", {"k": 4, "kappa": 8.0})``."""
    body = spec.split(":", 1)[1] if ":" in spec else ""
    if not body:
        raise UsageError(f"synthetic dataset needs a family, e.g. synthetic:isotropic; families: {', '.join(FAMILIES)}")
    family, *pairs = body.split(",")
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in DEFAULTS:
            raise UsageError(
                f"bad synthetic parameter {pair!r} in {spec!r}; use key=value with keys {', '.join(DEFAULTS)}"
            )
        try:
            params[key] = type(DEFAULTS[key])(float(value)) if isinstance(DEFAULTS[key], int) else float(value)
        except ValueError:
            raise UsageError(f"synthetic parameter {key} needs a number, got {value!r}") from None
    return family, params


def load_synthetic(spec: str, split: str = "train"):
    """A :class:`symmetry.data.Dataset` of synthetic fields from a spec string."""
    from symmetry.data import Dataset

    family, params = parse_spec(spec)
    fields = make_fields(family, split=split, **params)
    return Dataset(name=spec, sources=fields, description=FAMILIES[family])
