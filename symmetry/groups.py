"""Finite subgroups of O(2) acting on the image plane (theory.md, section 1).

Every element is a 2x2 orthogonal matrix ``A`` acting on plane coordinates
``(x, y)`` with ``x`` to the right and ``y`` up, so that ``pi_A[r](p) = r(A^-1 p)``
rotates image content counter-clockwise for a positive angle (the convention of
``torch.rot90(img, k, dims=(-2, -1))``). Quarter turns and axis flips are stored
with exact integer entries, so they act on a pixel grid as exact permutations.

Names accepted by :func:`get_group`:

- ``rotN``: the cyclic group of ``N`` rotations by ``2*pi*k/N`` (``N >= 1``);
- ``flip``: identity and the left-right mirror ``x -> -x``;
- ``flipud``: identity and the up-down mirror ``y -> -y``;
- ``dihN``: ``rotN`` plus its ``N`` reflections (``dih1`` equals ``flip``);
- ``so2`` or ``so2:K``: ``K`` equally spaced rotations sampling SO(2) (default 36).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from symmetry.errors import UsageError

if TYPE_CHECKING:
    import torch

SO2_DEFAULT_SAMPLES = 36
MAX_ORDER = 4096
"""Largest group order :func:`get_group` builds (``rotN``, ``dihN``, ``so2:K``): far beyond any filter's angular
resolution, and small enough that every element's windows fit in memory."""
_TOL = 1e-9

GROUP_NAMES_HELP = (
    "rotN (N >= 1, e.g. rot4, rot8), flip, flipud, dihN (N >= 1, e.g. dih4), so2 or so2:K (K sampled angles)"
)


class UnknownGroupError(UsageError, ValueError):
    """Raised for a group name that :func:`get_group` does not know (a usage error: exit code 2)."""


def turn_matrix(turn: float | Fraction, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Rotation by ``turn`` full turns (``degrees / 360``) ``(2, 2)``; quarter turns have exact entries in {-1, 0, 1}.

    Convention: plane coordinates ``(x, y)`` as every matrix here (and :func:`symmetry.transforms.rotation_matrix`);
    other angles use ``math.cos`` and ``math.sin`` of ``2 pi (turn mod 1)``. Exact entries make a quarter turn act
    on a pixel grid as a permutation (:func:`symmetry.transforms.lattice_permutations`). Pass a
    ``fractions.Fraction`` for exact arithmetic. ``dtype`` defaults to float64.
    """
    import torch  # lazy: the command lines import this module for --help, which needs no torch (issue 20)

    return torch.tensor(_rotation(turn), dtype=dtype or torch.float64, device=device)


def is_grid_exact(matrix) -> bool:
    """True when the 2x2 ``matrix`` (nested sequence, array or tensor) maps the square pixel grid onto itself: every
    entry is 0 or +-1 (quarter turns and axis flips), so resampling by it is an exact permutation of pixels."""
    rows = matrix.tolist() if hasattr(matrix, "tolist") else matrix
    return all(v in (-1.0, 0.0, 1.0) for row in rows for v in row)


def _rotation(turn: float | Fraction) -> tuple[tuple[float, float], tuple[float, float]]:
    """Rotation by ``turn`` full turns as nested tuples (:func:`turn_matrix`): quarter turns have exact entries."""
    turn = turn % 1
    quarter = float(turn) * 4
    if abs(quarter - round(quarter)) < 1e-12:
        c, s = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[round(quarter) % 4]
    else:
        angle = 2 * math.pi * float(turn)
        c, s = math.cos(angle), math.sin(angle)
    return ((c, -s), (s, c))


def _matmul(a, b):
    return tuple(tuple(sum(a[i][k] * b[k][j] for k in range(2)) for j in range(2)) for i in range(2))


_FLIP = ((-1.0, 0.0), (0.0, 1.0))


@dataclass(frozen=True)
class GroupElement:
    """One transformation ``A`` in O(2): a readable name and its 2x2 matrix."""

    name: str
    matrix: tuple[tuple[float, float], tuple[float, float]]

    @property
    def is_reflection(self) -> bool:
        return self.det < 0

    @property
    def det(self) -> float:
        (a, b), (c, d) = self.matrix
        return a * d - b * c

    @property
    def angle(self) -> float:
        """Rotation angle in degrees of the rotation part (``A`` or ``A @ flip``), in [0, 360)."""
        m = _matmul(self.matrix, _FLIP) if self.is_reflection else self.matrix
        return math.degrees(math.atan2(m[1][0], m[0][0])) % 360.0

    @property
    def is_identity(self) -> bool:
        return self.close_to(((1.0, 0.0), (0.0, 1.0)))

    @property
    def is_grid_exact(self) -> bool:
        """True when ``A`` maps the square pixel grid onto itself (quarter turns, axis flips)."""
        return is_grid_exact(self.matrix)

    def close_to(self, matrix, tol: float = _TOL) -> bool:
        return all(abs(self.matrix[i][j] - matrix[i][j]) < tol for i in range(2) for j in range(2))

    def inverse(self) -> GroupElement:
        (a, b), (c, d) = self.matrix
        return _element(((a, c), (b, d)))  # orthogonal: inverse is the transpose

    def tensor(self, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """The matrix as a ``(2, 2)`` tensor (float64 unless ``dtype``)."""
        import torch  # lazy: the command lines import this module for --help, which needs no torch (issue 20)

        return torch.tensor(self.matrix, dtype=dtype or torch.float64, device=device)

    def __repr__(self) -> str:
        return f"GroupElement({self.name!r})"


def _name(matrix) -> str:
    m = matrix
    det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
    if det > 0:
        deg = math.degrees(math.atan2(m[1][0], m[0][0])) % 360.0
        if abs(deg) < 1e-7 or abs(deg - 360) < 1e-7:
            return "e"
        return f"rot{deg:.4g}"
    if all(abs(m[i][j] - _FLIP[i][j]) < _TOL for i in range(2) for j in range(2)):
        return "flip"
    if all(abs(m[i][j] - (1.0, 0.0, 0.0, -1.0)[2 * i + j]) < _TOL for i in range(2) for j in range(2)):
        return "flipud"
    rot = _matmul(m, _FLIP)
    return f"{_name(rot)}*flip"


def _element(matrix) -> GroupElement:
    return GroupElement(_name(matrix), tuple(tuple(float(v) for v in row) for row in matrix))


@dataclass(frozen=True)
class Group:
    """A finite group of plane transformations; the identity is always first."""

    name: str
    elements: tuple[GroupElement, ...]

    def __len__(self) -> int:
        return len(self.elements)

    def __iter__(self):
        return iter(self.elements)

    def __getitem__(self, index: int) -> GroupElement:
        return self.elements[index]

    @property
    def order(self) -> int:
        return len(self.elements)

    @property
    def non_identity(self) -> tuple[GroupElement, ...]:
        return self.elements[1:]

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.elements]

    def element(self, name: str) -> GroupElement:
        for g in self.elements:
            if g.name == name:
                return g
        raise KeyError(f"{self.name} has no element {name!r}; elements: {', '.join(self.names)}")

    def contains(self, element: GroupElement) -> bool:
        return any(g.close_to(element.matrix) for g in self.elements)

    def is_subgroup_of(self, other: Group) -> bool:
        """True when every element of this group belongs to ``other`` (``rot4 < rot8 < rot16``, ``rot4 < dih4``)."""
        return all(other.contains(g) for g in self.elements)

    def matrices(self, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
        """All elements as one ``(|G|, 2, 2)`` tensor (float64 unless ``dtype``)."""
        import torch  # lazy: the command lines import this module for --help, which needs no torch (issue 20)

        return torch.tensor([g.matrix for g in self.elements], dtype=dtype or torch.float64, device=device)

    def __repr__(self) -> str:
        return f"Group({self.name!r}, order={self.order})"


def _check_order(what: str, n: int, factor: int = 1) -> None:
    """Refuse a group of fewer than 1 or more than :data:`MAX_ORDER` elements before building it."""
    if not 1 <= n * factor <= MAX_ORDER:
        raise UnknownGroupError(f"{what} between 1 and {MAX_ORDER // factor}, got {n}; valid names: {GROUP_NAMES_HELP}")


def rotations(n: int) -> Group:
    """The cyclic group ``rotN`` of ``n`` rotations by ``2*pi*k/n``."""
    _check_order("rotN needs N", n)
    return Group(f"rot{n}", tuple(_element(_rotation(Fraction(k, n))) for k in range(n)))


def dihedral(n: int) -> Group:
    """The dihedral group ``dihN``: ``rotN`` and the reflections ``R_k @ flip``."""
    _check_order("dihN needs N", n, factor=2)
    rots = [_rotation(Fraction(k, n)) for k in range(n)]
    refl = [_matmul(r, _FLIP) for r in rots]
    return Group(f"dih{n}", tuple(_element(m) for m in rots + refl))


def get_group(name: str) -> Group:
    """Parse a group name (see the module docstring); unknown names raise :class:`UnknownGroupError`."""
    key = name.strip().lower()
    if key == "flip":
        return Group("flip", (_element(_rotation(Fraction(0))), _element(_FLIP)))
    if key == "flipud":
        return Group("flipud", (_element(_rotation(Fraction(0))), _element(((1.0, 0.0), (0.0, -1.0)))))
    if m := re.fullmatch(r"rot(\d+)", key):
        return rotations(int(m.group(1)))
    if m := re.fullmatch(r"dih(\d+)", key):
        return dihedral(int(m.group(1)))
    if m := re.fullmatch(r"so2(?::(\d+))?", key):
        k = int(m.group(1) or SO2_DEFAULT_SAMPLES)
        _check_order("so2:K needs K", k)
        return Group(f"so2:{k}", rotations(k).elements)
    raise UnknownGroupError(f"unknown group {name!r}; valid names: {GROUP_NAMES_HELP}")


def is_subgroup(sub: str | Group, group: str | Group) -> bool:
    """``is_subgroup('rot4', 'rot8') -> True``."""
    sub = get_group(sub) if isinstance(sub, str) else sub
    group = get_group(group) if isinstance(group, str) else group
    return sub.is_subgroup_of(group)


EXAMPLE_GROUPS = ("rot2", "rot4", "rot8", "rot16", "flip", "flipud", "dih4", "dih8", "so2")
