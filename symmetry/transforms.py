"""The action pi~_A of a transformation on pixel arrays (theory.md, sections 1 and 4).

Plane coordinates are ``(x, y)`` with ``x`` along columns and ``y`` up (against rows),
centred on the image; ``pi_A[r](p) = r(A^-1 p)``. All sampling goes through
:func:`interpolate`, a gather-based interpolation in torch (no NumPy round trips), so
that at integer positions it returns the stored pixels bit for bit: quarter turns and
axis flips are then exact pixel permutations, as the theory requires.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from symmetry.groups import GroupElement

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
KEYS_A = -0.5  # Keys' cubic convolution parameter used by MATLAB's imresize/interp2 'cubic'
SUPPORT_MARGIN = {"bicubic": 2, "bilinear": 1, "nearest": 1}  # pixels a sample may read beyond its position
_CHUNK = 1 << 16  # points interpolated at once on the CPU (bounds the tap temporaries, stays in cache)


def rotation_matrix(angle, dtype=torch.float64, device=None) -> torch.Tensor:
    """Counter-clockwise rotation ``R(angle)`` ``(..., 2, 2)`` of plane coordinates ``(x, y)`` (angle in radians).

    Convention: ``x`` along columns, ``y`` up (against rows), as every matrix of :mod:`symmetry.groups`.
    Differentiable in ``angle``; batched over its shape.
    """
    angle = torch.as_tensor(angle, dtype=dtype, device=device)
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def deformation_matrix(theta0, cx, cy, dtype=torch.float64, device=None) -> torch.Tensor:
    """``D = R(theta0) diag(cx, cy)`` ``(..., 2, 2)``: SA-Conv's mesh deformation ``D_w`` (theory.md, section 3).

    Convention: plane coordinates ``(x, y)`` as :func:`rotation_matrix`; the filter for group element ``A`` is
    evaluated at ``A^-1 D^-1 delta``. Differentiable in all three arguments, which broadcast together.
    """
    theta0, cx, cy = (torch.as_tensor(v, dtype=dtype, device=device) for v in (theta0, cx, cy))
    theta0, cx, cy = torch.broadcast_tensors(theta0, cx, cy)
    c, s = torch.cos(theta0), torch.sin(theta0)
    return torch.stack([torch.stack([c * cx, -s * cy], -1), torch.stack([s * cx, c * cy], -1)], -2)


def _cubic_weights(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic weights of the taps at offsets -1, 0, 1, 2 for fractional part ``t``."""
    a = KEYS_A
    s0, s1, s2, s3 = t + 1, t, 1 - t, 2 - t
    far = lambda s: ((a * s - 5 * a) * s + 8 * a) * s - 4 * a  # noqa: E731  1 < |s| < 2
    near = lambda s: ((a + 2) * s - (a + 3)) * s * s + 1  # noqa: E731  |s| <= 1
    return torch.stack([far(s0), near(s1), near(s2), far(s3)], dim=-1)


def interpolate(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, method: str = "bicubic") -> torch.Tensor:
    """Sample ``image`` ``(C, H, W)`` at continuous pixel positions; returns ``(C, *rows.shape)``.

    Positions are in pixel units (row 0, column 0 is the first pixel's centre).
    Taps outside the image are clamped to the border; callers keep their samples at
    least :data:`SUPPORT_MARGIN` pixels inside when the border must not matter.
    Points are processed in chunks (bounded temporaries); when every tap of the call
    lies inside the image the flat tap indices are one base index plus fixed offsets.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(INTERPOLATIONS)}")
    c, h, w = image.shape
    flat = image.reshape(c, h * w)
    shape = rows.shape
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    if method == "nearest":
        r = torch.round(rows).long().clamp(0, h - 1)
        q = torch.round(cols).long().clamp(0, w - 1)
        return flat[:, r * w + q].reshape(c, *shape)
    first, count = (0, 2) if method == "bilinear" else (-1, 4)  # taps at offsets first .. first + count - 1
    index = torch.int32 if h * w < 2**31 else torch.int64
    taps = torch.arange(first, first + count, device=image.device, dtype=index)
    offsets = (taps[:, None] * w + taps).reshape(-1)  # flat offsets of the count x count taps
    last = 1 - first - count  # floor(x) + first + count - 1 <= size - 1  <=>  x < size + last
    inside = rows.numel() > 0 and bool(
        (rows.min() >= -first) & (rows.max() < h + last) & (cols.min() >= -first) & (cols.max() < w + last)
    )
    out = torch.empty(c, rows.numel(), dtype=image.dtype, device=image.device)
    chunk = _CHUNK if image.device.type == "cpu" else 64 * _CHUNK
    for s in range(0, rows.numel(), chunk):
        r, q = rows[s : s + chunk], cols[s : s + chunk]
        r0, q0 = torch.floor(r), torch.floor(q)
        tr, tq = (r - r0).to(image.dtype), (q - q0).to(image.dtype)
        if method == "bilinear":
            wr, wq = torch.stack([1 - tr, tr], dim=-1), torch.stack([1 - tq, tq], dim=-1)
        else:
            wr, wq = _cubic_weights(tr), _cubic_weights(tq)
        if inside:
            idx = (r0.to(index) * w + q0.to(index))[:, None] + offsets  # (P, T*T)
        else:
            ri = (r0.to(index)[:, None] + taps).clamp_(0, h - 1) * w  # (P, T)
            qi = (q0.to(index)[:, None] + taps).clamp_(0, w - 1)
            idx = ri[:, :, None] + qi[:, None, :]
        vals = flat.index_select(1, idx.reshape(-1)).reshape(c, len(r), count, count)  # (C, P, T, T)
        along_cols = (vals @ wq[:, :, None])[..., 0]  # along columns first
        out[:, s : s + chunk] = (along_cols * wr).sum(-1)
    return out.reshape(c, *shape)


def disk_offsets(radius: float, mesh: float, device=None) -> torch.Tensor:
    """Lattice offsets ``(x, y)`` (in mesh units) of a disk of physical radius ``radius`` at mesh ``mesh``.

    Returns ``(P, 2)``; the physical offset of a point is ``mesh * offset``. Fixing the
    physical radius while ``mesh`` varies is what makes ``eps_G(h)`` comparable across h.
    """
    if radius <= 0 or mesh <= 0:
        raise ValueError(f"window radius and mesh must be > 0, got radius={radius}, mesh={mesh}")
    n = int(math.floor(radius / mesh + 1e-9))
    i = torch.arange(-n, n + 1, dtype=torch.float64, device=device)
    y, x = torch.meshgrid(-i, i, indexing="ij")  # row-major order, y up
    keep = (x * x + y * y) * mesh * mesh <= radius * radius + 1e-9
    return torch.stack([x[keep], y[keep]], dim=-1)


def window_positions(centers: torch.Tensor, offsets: torch.Tensor, matrices: torch.Tensor):
    """Pixel positions of windows whose grid is transformed by ``A^-1``.

    ``centers`` ``(M, 2)`` as (row, col), ``offsets`` ``(P, 2)`` as (x, y) in pixels,
    ``matrices`` ``(G, 2, 2)``. Returns ``rows, cols`` of shape ``(G, M, P)``.
    """
    inv = matrices.transpose(-1, -2).to(offsets.dtype)  # orthogonal
    p = torch.einsum("gij,pj->gpi", inv, offsets)  # (G, P, 2)
    rows = centers[None, :, None, 0] - p[:, None, :, 1]
    cols = centers[None, :, None, 1] + p[:, None, :, 0]
    return rows, cols


def lattice_permutations(offsets: torch.Tensor, matrices: torch.Tensor) -> list[torch.Tensor | None]:
    """For each ``A``, the permutation ``perm`` with ``A^-1 offsets[i] == offsets[perm[i]]`` bit for bit, or None.

    Quarter turns and axis flips map a disk lattice onto itself with exact arithmetic,
    so their windows are the identity window's samples reordered (same positions, same
    floating-point values); other elements return None and are interpolated.
    """
    moved = torch.einsum("gij,pj->gpi", matrices.transpose(-1, -2).to(offsets.dtype), offsets)  # as window_positions
    key = offsets.detach().cpu().numpy()
    order = np.lexsort(key.T[::-1])
    out: list[torch.Tensor | None] = []
    for points in moved.detach().cpu().numpy():
        by = np.lexsort(points.T[::-1])
        if not np.array_equal(points[by], key[order]):
            out.append(None)
            continue
        perm = np.empty(len(points), dtype=np.int64)
        perm[by] = order
        out.append(torch.from_numpy(perm).to(offsets.device))
    return out


def sample_windows(
    image: torch.Tensor,
    centers: torch.Tensor,
    offsets: torch.Tensor,
    matrices: torch.Tensor,
    method: str = "bicubic",
) -> torch.Tensor:
    """Windows of ``image`` ``(C, H, W)`` on the grid transformed by each ``A^-1``: ``(G, M, C, P)``.

    Elements that permute the offsets (quarter turns and flips of a disk lattice, see
    :func:`lattice_permutations`) reuse the identity window's samples, bit for bit.
    """
    perms = lattice_permutations(offsets, matrices)
    rows, cols = window_positions(centers, offsets, matrices)  # (G, M, P), computed as for every element
    direct = [g for g, perm in enumerate(perms) if perm is None]
    if len(direct) == len(perms):
        return interpolate(image, rows, cols, method).permute(1, 2, 0, 3)  # (C, G, M, P) -> (G, M, C, P)
    base_rows, base_cols = window_positions(centers, offsets, torch.eye(2, dtype=matrices.dtype)[None].to(matrices))
    rows, cols = torch.cat([base_rows, rows[direct]]), torch.cat([base_cols, cols[direct]])
    sampled = interpolate(image, rows, cols, method).permute(1, 2, 0, 3)  # the identity first, then the others
    out = sampled.new_empty(len(perms), *sampled.shape[1:])
    for g, perm in enumerate(perms):
        out[g] = sampled[0].index_select(-1, perm) if perm is not None else sampled[1 + direct.index(g)]
    return out


def transform_image(
    image: torch.Tensor, element: GroupElement, method: str = "bicubic"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pi~_A`` on whole images ``(..., H, W)``: returns the transformed images and a validity mask.

    The image rotates about its centre. Grid-exact elements (quarter turns, axis flips)
    give exact pixel permutations, with height and width swapped for odd quarter turns
    (``torch.rot90`` / ``torch.flip``). Other elements keep the frame; pixels whose
    source lies outside the image are set to 0 and marked ``False`` in the mask.
    """
    *lead, h, w = image.shape
    swap = element.is_grid_exact and element.matrix[0][0] == 0
    ho, wo = (w, h) if swap else (h, w)
    dtype = torch.float64
    r = torch.arange(ho, dtype=dtype, device=image.device)
    q = torch.arange(wo, dtype=dtype, device=image.device)
    rr, qq = torch.meshgrid(r, q, indexing="ij")
    pts = torch.stack([qq - (wo - 1) / 2, (ho - 1) / 2 - rr], dim=-1).reshape(-1, 2)
    centre = torch.tensor([[(h - 1) / 2, (w - 1) / 2]], dtype=dtype, device=image.device)
    rows, cols = window_positions(centre, pts, element.tensor(dtype, image.device)[None])
    rows, cols = rows.reshape(ho, wo), cols.reshape(ho, wo)
    mask = (rows >= -1e-6) & (rows <= h - 1 + 1e-6) & (cols >= -1e-6) & (cols <= w - 1 + 1e-6)
    flat = image.reshape(-1, h, w)
    if element.is_grid_exact:
        method = "nearest"  # positions are integers: a pure gather, bit-exact
    out = interpolate(flat, rows, cols, method) * mask.to(image.dtype)
    return out.reshape(*lead, ho, wo), mask


def to_mesh(image: torch.Tensor, mesh: float) -> torch.Tensor:
    """The raster ``Y_h`` of a native-resolution image ``(C, H, W)`` at mesh ``mesh`` (native pixels per sample).

    ``mesh > 1`` downsamples with an antialiasing bicubic filter, ``mesh < 1`` upsamples
    bicubically; ``mesh == 1`` returns the image itself.
    """
    if mesh == 1:
        return image
    c, h, w = image.shape
    size = (max(1, round(h / mesh)), max(1, round(w / mesh)))
    out = F.interpolate(image[None], size=size, mode="bicubic", antialias=mesh > 1, align_corners=False)
    return out[0]
