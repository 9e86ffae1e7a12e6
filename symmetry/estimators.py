"""Statistics of the dataset symmetry error eps_G(h) (theory.md, section 4): sums over images and what they give.

The default distance ``d(P_h, pi~_A P_h)`` is the squared maximum mean discrepancy with
a Gaussian kernel ``k(w, w') = exp(-|w - w'|^2 / (2 sigma^2))`` on mean-removed windows,
with ``|.|`` the L2 norm over the window's disk (a Riemann sum with area element h^2,
so values are comparable across mesh sizes). The kernel is approximated by random
Fourier features ``z`` (:mod:`symmetry.features`); then ``MMD^2 = |E z(w_A) - E z(w)|^2``
and everything the estimate, its null and its bootstrap need are sums over images of

    d_n(A) = sum over the windows of image n of  z(w_A) - z(w)        (paired windows)

kept in :class:`MMDStatistics`: constant memory, additive across batches and shards.
The reported value is the unbiased (U-statistic over images) estimate

    eps_A = sum_{n != n'} d_n(A) . d_n'(A) / (M^2 - sum_n m_n^2),

which has mean 0 for a G-invariant distribution (so it can be slightly negative),
``M = sum_n m_n`` windows in all.

**Randomisation null.** Under the null (the image distribution is G-invariant) image
``x_n`` and ``pi_B x_n`` are exchangeable for every ``B`` in G. The windows of ``pi_B x``
for element ``A`` are those of ``x`` for ``AB`` (window grids compose:
``w^{pi_B x}_A = w^x_{AB}`` at the moved centre), so replacing each image by a uniformly
random ``B_n`` changes ``d_n(A)`` into ``d_n(A B_n) - d_n(B_n)``, available from the stored
per-element sums at no extra feature cost. Each null draw uses one ``B_n`` per image for
every element, so the worst-over-G statistic has a valid family-wise null. The null is
exact (in distribution) when the windows of the composed elements are exact, i.e. for
grid-exact groups (quarter turns and flips); for other rotations it holds up to
interpolation error. For groups of order 2 it is the classical sign flip. p-values are
``(1 + #{null >= observed}) / (1 + B)``, so the smallest is ``1 / (B + 1)`` (the floor the
report states). The bootstrap resamples images with Poisson(1) weights (streaming).
Random elements and weights are functions of ``(seed, image index)`` only (stream
``null``), so results do not depend on batching or sharding.

**Image-norm distance: a bracket on W2^2.** Beside the MMD (whose units depend on the kernel),
:class:`MomentStatistics` brackets the squared 2-Wasserstein distance ``W2^2(P_h, pi~_A P_h)``
in squared image-norm units (windows are scaled by ``h``, so ``|w|^2 = h^2 sum_p w_p^2``, the
``||.||_F^2`` of theory.md, section 2):

- lower: :func:`gaussian_distance` (Frechet) between moment-matched Gaussians, ``<= W2^2`` for any
  laws with those moments (Gelbrich); blind to half-turn-related asymmetries (theory.md, section 4);
- upper: the window-weighted mean over images of :func:`transport_cost`, the optimal assignment
  cost between an image's windows and its transformed windows. ``W2^2`` is jointly convex and
  each image's empirical laws average to ``P_h`` and ``pi~_A P_h``, so
  ``W2^2(P_h, pi~_A P_h) <= E[sum_n m_n OT_n / M]`` (Jensen, then convexity over the mixture of images).

Both are exact for a window law moved by a constant (each equals the squared norm of the shift)
and both are plug-in estimates: the lower one is biased up by sampling noise of the covariances,
the upper one is an upper bound only in expectation and is loose in high dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch
import torch.nn.functional as F

from symmetry.errors import DataError
from symmetry.groups import Group
from symmetry.runtime import DistInfo, all_reduce_sum, gather_objects
from symmetry.streams import rng


def multiplication_table(group: Group) -> torch.Tensor:
    """``table[a, b]`` = index of the element ``A_a A_b`` (matrix product: first ``B``, then ``A``)."""
    mats = group.matrices()
    prod = torch.einsum("aij,bjk->abik", mats, mats)
    dist = (prod[:, :, None] - mats[None, None]).abs().flatten(-2).amax(-1)  # (G, G, G)
    best = dist.argmin(-1)
    if not bool((dist.amin(-1) < 1e-9).all()):
        raise ValueError(f"{group.name} is not closed under composition")
    return best


@dataclass
class MMDStatistics:
    """Sufficient statistics of the MMD estimator for one group at one mesh (sums over images; module docstring).

    ``table`` is the group's :func:`multiplication_table`; rows of ``d`` follow the group's element order.
    """

    order: int
    features: int
    permutations: int
    bootstrap: int
    seed: int
    table: torch.Tensor = None  # (G, G) int64
    sum_d: torch.Tensor = None  # (G, D)
    sum_dd: torch.Tensor = None  # (G,)  sum_n |d_n|^2
    windows: float = 0.0  # M
    windows_sq: float = 0.0  # sum_n m_n^2
    images: int = 0
    perm: torch.Tensor = None  # (B_perm, G, D)   sum_n d_n(A B_n) - d_n(B_n)
    perm_dd: torch.Tensor = None  # (B_perm, G)  sum_n |d_n(A B_n) - d_n(B_n)|^2
    boot: torch.Tensor = None  # (B_boot, G, D)
    boot_dd: torch.Tensor = None  # (B_boot, G)
    boot_m: torch.Tensor = None  # (B_boot,)
    boot_m2: torch.Tensor = None  # (B_boot,)
    per_image: list = field(default_factory=list)  # (index, |d_n|^2 / m_n^2 per element)

    def __post_init__(self):
        g, d, bp, bb = self.order, self.features, self.permutations, self.bootstrap
        self._pending: list = []  # images added but not yet folded into the null and bootstrap sums (flush)
        if self.table is None:
            self.table = torch.zeros(g, g, dtype=torch.int64) if g == 1 else None
        if self.table is None or tuple(self.table.shape) != (g, g):
            raise ValueError("MMDStatistics needs the group's multiplication table (multiplication_table(group))")
        z = lambda *s: torch.zeros(*s, dtype=torch.float64)  # noqa: E731
        for name, shape in (
            ("sum_d", (g, d)),
            ("sum_dd", (g,)),
            ("perm_dd", (bp, g)),
            ("boot_dd", (bb, g)),
            ("boot_m", (bb,)),
            ("boot_m2", (bb,)),
        ):
            if getattr(self, name) is None:
                setattr(self, name, z(*shape))
        # perm and boot (B x G x D, the bulk of the memory) are created by the first flush, or as zeros when read

    def _materialise(self) -> None:
        """Fold in the pending images and make sure the large sums exist (zeros before any image)."""
        self.flush()
        if self.perm is None:
            self.perm = torch.zeros(self.permutations, self.order, self.features, dtype=torch.float64)
        if self.boot is None:
            self.boot = torch.zeros(self.bootstrap, self.order, self.features, dtype=torch.float64)

    @classmethod
    def for_group(cls, group: Group, features: int, permutations: int, bootstrap: int, seed: int) -> MMDStatistics:
        return cls(len(group), features, permutations, bootstrap, seed, multiplication_table(group))

    def add(self, index: int, d: torch.Tensor, m: int) -> None:
        """Fold in image ``index`` with its feature-difference sums ``d`` ``(G, D)`` over ``m`` windows.

        The null and bootstrap sums of a few images are folded in together (:meth:`flush`), so the large
        ``(B, G, D)`` sums are read and written once per batch of images, not once per image.
        """
        d = d.detach().to("cpu", torch.float64)
        dd = (d * d).sum(-1)
        draws = rng(self.seed, "null", index)
        elements = torch.from_numpy(draws.integers(0, self.order, self.permutations))
        weights = torch.from_numpy(draws.poisson(1.0, self.bootstrap).astype(np.float64))
        self.sum_d += d
        self.sum_dd += dd
        self.windows += m
        self.windows_sq += m * m
        self.images += 1
        self.per_image.append((index, (dd / (m * m)).tolist()))
        self._pending.append((elements, weights, d, dd, float(m)))
        if len(self._pending) >= pending_images(self.order, d.shape[-1]):
            self.flush()

    def _pending_terms(self) -> tuple[torch.Tensor, ...]:
        """The pending images' terms: null rows ``(B_perm, K)`` into ``moved`` ``(K*G, G*D)`` (row ``n G + B`` is
        ``d_n(A B) - d_n(B)`` for every ``A``), their squared norms ``(K*G, G)``, bootstrap weights ``(B_boot, K)``,
        ``d`` ``(K, G*D)``, ``|d_n|^2`` ``(K, G)`` and windows ``(K,)``."""
        elements, weights, d, dd, m = (list(v) for v in zip(*self._pending))
        g, k = self.order, len(d)
        d, dd, m = torch.stack(d), torch.stack(dd), torch.tensor(m, dtype=torch.float64)  # (K, G, D), (K, G), (K,)
        moved = d[:, self.table.T] - d[:, :, None, :]  # (K, G_B, G_A, D): d_n(A B) - d_n(B)
        rows = torch.stack(elements, 1) + g * torch.arange(k)  # (B_perm, K): row n * G + B of moved
        moved_dd = (moved * moved).sum(-1).reshape(k * g, g)
        return rows, moved.reshape(k * g, -1), moved_dd, torch.stack(weights, 1), d.reshape(k, -1), dd, m

    def _null_chunks(self, rows: torch.Tensor, moved: torch.Tensor):
        """``(slice, sum_n moved[rows[b, n]])`` for chunks of null draws ``b``: exactly the multiply-adds needed
        (one row per image and draw; ``embedding_bag`` sums the picked rows), each chunk small enough for the cache."""
        for start in range(0, len(rows), NULL_CHUNK):
            part = slice(start, start + NULL_CHUNK)
            yield part, F.embedding_bag(rows[part], moved, mode="sum")

    def flush(self) -> None:
        """Add the pending images' terms to the null and bootstrap sums.

        Null draw ``b`` of image ``n`` uses ``B = elements_n[b]`` and adds ``d_n(A B) - d_n(B)`` for every ``A``:
        one picked row per image, added in place chunk by chunk (the large sums are neither copied nor
        reallocated). Bootstrap draw ``b`` adds ``weights_n[b] d_n``.
        """
        if not self._pending:
            return
        rows, moved, moved_dd, w, d, dd, m = self._pending_terms()
        self._pending.clear()
        if self.perm is None:
            self.perm = torch.zeros(self.permutations, self.order, self.features, dtype=torch.float64)
        self.perm = self.perm.contiguous()  # (a no-op unless a caller handed in a strided tensor)
        flat = self.perm.view(self.permutations, -1)
        for part, picked in self._null_chunks(rows, moved):
            flat[part] += picked
        self.perm_dd += F.embedding_bag(rows, moved_dd, mode="sum")
        if self.boot is None:
            self.boot = (w @ d).view(self.bootstrap, self.order, self.features)
        else:
            self.boot = self.boot.contiguous()
            self.boot.view(self.bootstrap, -1).addmm_(w, d)
        self.boot_dd.addmm_(w**2, dd)
        self.boot_m.add_(w @ m)
        self.boot_m2.add_(w**2 @ (m * m))

    def _null_norms(self, terms: tuple | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``|perm[b, A]|^2`` and ``perm_dd`` ``(B_perm, G)`` with the pending images folded in on the fly: the stored
        sums are read once and the ``(B, G, D)`` sum is never written (nor created when every image is pending).

        With every image pending and ``K G^2 < B_perm`` (small runs), ``|sum_n v_nb|^2 = sum_{n, n'} <v_nb, v_n'b>``
        is read off the Gram matrices of the ``K G`` candidate rows per element (``G (K G)^2 D`` multiply-adds in
        one product and ``B G K^2`` look-ups, instead of ``B K G D``)."""
        if terms is None:
            if self.perm is None:
                return torch.zeros(self.permutations, self.order, dtype=torch.float64), self.perm_dd.clone()
            return _squared_norm(self.perm), self.perm_dd.clone()
        rows, moved, moved_dd, *_ = terms
        perm_dd = self.perm_dd + F.embedding_bag(rows, moved_dd, mode="sum")
        k, g = rows.shape[1], self.order
        if self.perm is None and k * g * g < self.permutations:  # few images: their Gram matrices cost less
            by_element = moved.view(k * g, g, self.features).transpose(0, 1)  # (G_A, K*G, D)
            gram = by_element @ by_element.transpose(1, 2)  # (G_A, K*G, K*G): <row (n, B), row (n', B')> per A
            pairs = (rows[:, :, None] * (k * g) + rows[:, None, :]).reshape(-1)  # (B_perm * K * K,)
            norms = gram.reshape(g, -1)[:, pairs].view(g, self.permutations, k * k).sum(-1).T
            return norms.contiguous(), perm_dd
        norms = torch.empty(self.permutations, self.order, dtype=torch.float64)
        for part, picked in self._null_chunks(rows, moved):
            if self.perm is not None:
                picked += self.perm[part].reshape(picked.shape)
            norms[part] = _squared_norm(picked.view(len(picked), self.order, self.features))
        return norms, perm_dd

    def _boot_sums(self, terms: tuple | None) -> tuple[torch.Tensor, ...]:
        """``boot``, ``boot_dd``, ``boot_m``, ``boot_m2`` with the pending images added: new tensors when images are
        pending (the ``(B_boot, G, D)`` sum is small beside the null's), nothing stored changes."""
        boot = self.boot
        if boot is None:
            boot = torch.zeros(self.bootstrap, self.order, self.features, dtype=torch.float64)
        if terms is None:
            return boot, self.boot_dd, self.boot_m, self.boot_m2
        *_, w, d, dd, m = terms
        shape = (self.bootstrap, self.order, self.features)
        boot = torch.addmm(boot.reshape(self.bootstrap, self.order * self.features), w, d).view(shape)
        return boot, self.boot_dd + w**2 @ dd, self.boot_m + w @ m, self.boot_m2 + w**2 @ (m * m)

    def merge(self, other: MMDStatistics) -> None:
        """Add another shard's statistics (same settings, disjoint images)."""
        self._materialise()
        other._materialise()
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def all_reduce(self, info: DistInfo) -> None:
        """Sum the statistics of every rank (disjoint images) in place on every rank; per-image values are gathered."""
        self._materialise()
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
        self._materialise()
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state(cls, state: dict) -> MMDStatistics:
        return cls(**state)

    def estimate(self) -> dict[str, torch.Tensor]:
        """Unbiased eps per element ``(G,)``, its randomisation null ``(B, G)`` and bootstrap ``(B, G)``.

        The null's pending images are folded in on the fly (:meth:`_null_norms`); nothing stored changes."""
        if self.images < 2:
            raise DataError("the symmetry error needs at least 2 images (pairs of images enter the estimate)")
        terms = self._pending_terms() if self._pending else None  # (the pending images' terms, made once)
        perm_norms, perm_dd = self._null_norms(terms)
        boot_sum, boot_dd, boot_m, boot_m2 = self._boot_sums(terms)
        denom = self.windows**2 - self.windows_sq
        eps = ((self.sum_d**2).sum(-1) - self.sum_dd) / denom
        null = (perm_norms - perm_dd) / denom
        boot_denom = (boot_m**2 - boot_m2).clamp_min(1e-12)[:, None]
        boot = (_squared_norm(boot_sum) - boot_dd) / boot_denom
        return {"eps": eps, "null": null, "boot": boot}


def _squared_norm(x: torch.Tensor) -> torch.Tensor:
    """``|x|^2`` along the last axis (``vector_norm`` makes no ``x**2`` temporary)."""
    return torch.linalg.vector_norm(x, dim=-1) ** 2


NULL_CHUNK = 32
"""Null draws folded at once: a ``(32, G*D)`` block (1 MB for rot8 with 512 features) stays in the cache."""

_PENDING_VALUES = 1 << 19
"""Images are folded into the null sums in batches of about this many ``d(A B) - d(B)`` values (4 MB)..."""
PENDING_IMAGES = 16
"""... and of at most this many images, whatever the group's order (issue 20). Each waiting image holds its null
draws (``permutations`` int64, as many bytes as ``d`` of an order-2 group with 512 features) and ``d``, and a fold's
temporaries grow with the batch: with the value bound alone an order-2 group waited for 256 images, and the memory
in use at the peak of the default test grew by 35 MiB (8%) from 25 to 200 photos. With this bound every group folds
every 16 images or sooner, so a run of 25 images reaches the peak of a run of 200 (benchmarks/peak_rss.py)."""


def pending_images(order: int, features: int) -> int:
    """Images folded into the null and bootstrap sums together (:meth:`MMDStatistics.flush`): enough for about
    :data:`_PENDING_VALUES` values of ``d(A B) - d(B)``, at most :data:`PENDING_IMAGES`."""
    return max(1, min(PENDING_IMAGES, math.ceil(_PENDING_VALUES / (order * order * features))))


_SUMS = (
    "sum_d",
    "sum_dd",
    "windows",
    "windows_sq",
    "images",
    "perm",
    "perm_dd",
    "boot",
    "boot_dd",
    "boot_m",
    "boot_m2",
    "per_image",
)
"""The additive fields of :class:`MMDStatistics` (the others are its settings)."""


OT_WINDOWS = 256  # windows per image in the assignment of the W2 upper bound (any subset keeps it an upper bound)


def transport_cost(x: torch.Tensor, y: torch.Tensor) -> float:
    """``W2^2`` between the empirical laws of ``x`` and ``y`` ``(M, dim)`` (equal weights): min over
    permutations ``s`` of ``mean_i |x_i - y_s(i)|^2`` (exact assignment, scipy)."""
    from scipy.optimize import linear_sum_assignment  # lazy: 0.3 s of CPU to import, needed only with --frechet

    cost = torch.cdist(x.to(torch.float64), y.to(torch.float64)).pow(2).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


@dataclass
class MomentStatistics:
    """Window sums at one mesh for the image-norm W2^2 bracket (module docstring): first and second moments
    per element (the Gelbrich lower bound) and window-weighted per-image assignment costs (the upper bound)."""

    order: int
    dim: int
    count: float = 0.0
    s1: torch.Tensor = None  # (G, dim)
    s2: torch.Tensor = None  # (G, dim, dim)
    ot: torch.Tensor = None  # (G,)  sum_n m_n OT_n(A), m_n the windows in image n's assignment
    ot_count: float = 0.0  # sum_n m_n

    def __post_init__(self):
        if self.s1 is None:
            self.s1 = torch.zeros(self.order, self.dim, dtype=torch.float64)
            self.s2 = torch.zeros(self.order, self.dim, self.dim, dtype=torch.float64)
        if self.ot is None:
            self.ot = torch.zeros(self.order, dtype=torch.float64)

    def add(self, windows: torch.Tensor) -> None:
        """Fold in one image's windows ``(G, M, dim)`` (identity first)."""
        w = windows.to(torch.float64)
        self.s1 += w.sum(1).cpu()
        self.s2 += torch.einsum("gmi,gmj->gij", w, w).cpu()
        self.count += w.shape[1]
        sub = w[:, :OT_WINDOWS]
        m = sub.shape[1]
        self.ot += torch.tensor([m * transport_cost(sub[0], sub[g]) for g in range(self.order)], dtype=torch.float64)
        self.ot_count += m

    def merge(self, other: MomentStatistics) -> None:
        self.count += other.count
        self.s1 += other.s1
        self.s2 += other.s2
        self.ot += other.ot
        self.ot_count += other.ot_count

    def all_reduce(self, info: DistInfo) -> None:
        """Sum the window moments of every rank in place on every rank."""
        if info.world <= 1:
            return
        head = torch.tensor([self.count, self.ot_count], dtype=torch.float64)
        parts = [head, self.ot, self.s1.reshape(-1), self.s2.reshape(-1)]
        total = all_reduce_sum(torch.cat(parts), info)
        self.count, self.ot_count = float(total[0]), float(total[1])
        start = 2
        for name in ("ot", "s1", "s2"):
            value = getattr(self, name)
            setattr(self, name, total[start : start + value.numel()].reshape(value.shape).clone())
            start += value.numel()

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def distances(self) -> torch.Tensor:
        """Gaussian distance between the identity windows and each element's windows ``(G,)``."""
        mean = self.s1 / self.count
        cov = self.s2 / self.count - mean[:, :, None] * mean[:, None, :]
        return torch.stack([gaussian_distance(mean[0], cov[0], mean[g], cov[g]) for g in range(self.order)])

    def upper_bounds(self) -> torch.Tensor:
        """Upper bound (in expectation) on W2^2 between the identity windows and each element's ``(G,)``."""
        return self.ot / self.ot_count if self.ot_count else torch.full((self.order,), float("nan"))


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


TIES = 1e-9
"""Null draws within ``TIES`` times the largest magnitude of the observation and its draws count as ties (``>=``).

Some draws equal the observation exactly in exact arithmetic: every image re-transformed by the identity, or, for a
group of order 2, every image flipped (the statistic is even in the flip). Their floating-point values differ from
the observation's by rounding (~1e-16 relative), which depends on the order of the sums (a checkpointed run folds
the null draw by draw, a small fresh run reads it off Gram matrices), so without a tolerance such draws would count
or not by chance: with 3 images and a flip a quarter of the draws are such ties."""


def _tie_tolerance(values: np.ndarray) -> float:
    finite = np.abs(values[np.isfinite(values)])
    return TIES * float(finite.max()) if finite.size else 0.0


def p_value(observed: float, null: np.ndarray) -> float:
    """Randomisation p-value ``(1 + #{null >= observed}) / (1 + B)``, ties within :data:`TIES` counted; NaN when
    there is no null or no observation."""
    null = np.asarray(null, dtype=np.float64)
    if len(null) == 0 or not np.isfinite(observed):
        return float("nan")
    tol = _tie_tolerance(np.append(null, observed))
    return float((1 + np.sum(null >= observed - tol)) / (1 + len(null)))


def min_p_aggregate(observed, null) -> tuple[float, np.ndarray, np.ndarray]:
    """Several statistics under one randomisation-calibrated threshold (MMDAgg's combination, uniform weights).

    ``observed`` ``(K,)`` and ``null`` ``(B, K)``: K statistics (kernels, scales, meshes, elements) whose null draws
    come from the *same* random group elements (row ``b`` of every column is one re-transformation of the images).
    Each draw ``b`` (the observation is draw 0) gets its rank p-value in every column,
    ``p_k(b) = #{b' : T_k(b') >= T_k(b)} / (B + 1)`` (ties within :data:`TIES`), and the combined statistic
    ``S_b = min_k p_k(b)``. Returns

    - the aggregated p-value ``#{b : S_b <= S_0} / (B + 1)``: exact (the B + 1 draws are exchangeable under the null
      and ``S`` is a symmetric function of them), so one threshold serves all K statistics, with no union bound;
    - the per-statistic p-values ``p_k(0)`` (``(1 + #{null >= observed}) / (B + 1)``, as :func:`p_value`);
    - per-statistic adjusted p-values ``#{b : S_b <= p_k(0)} / (B + 1)`` (single-step min-p, Westfall and Young):
      family-wise over the K statistics; their minimum is the aggregated p-value.

    Columns with a missing observation or null are left out (NaN in the outputs).
    """
    obs = np.asarray(observed, dtype=np.float64)
    null = np.asarray(null, dtype=np.float64).reshape(-1, len(obs))
    raw = np.full(len(obs), np.nan)
    adjusted = np.full(len(obs), np.nan)
    ok = np.isfinite(obs) & np.isfinite(null).all(0)
    if len(null) == 0 or not ok.any():
        return float("nan"), raw, adjusted
    draws = np.vstack([obs[ok], null[:, ok]])  # (B + 1, K'): the observation is draw 0
    total = len(draws)
    ordered = np.sort(draws, axis=0)
    at_least = np.stack(  # draws >= T_k(b), ties within TIES counted (p_value)
        [
            total - np.searchsorted(ordered[:, k], draws[:, k] - _tie_tolerance(draws[:, k]), side="left")
            for k in range(ok.sum())
        ],
        1,
    )
    ranks = at_least / total  # p_k(b)
    smallest = np.sort(ranks.min(1))  # S_b, sorted
    raw[ok] = ranks[0]
    adjusted[ok] = np.searchsorted(smallest, ranks[0], side="right") / total
    return float(adjusted[ok].min()), raw, adjusted


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if len(ok) == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out
