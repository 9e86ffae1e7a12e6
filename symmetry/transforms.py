"""The action pi~_A of plane transformations on pixel arrays, and resampling (theory.md, sections 1 and 4).

The one home of the project's geometry: build a matrix, then sample with one sampler. Matrices
(:func:`rotation_matrix`, :func:`deformation_matrix`, :func:`inverse_deformation_matrix`), lattices
(:func:`disk_offsets`, :func:`disk_mask`, :func:`window_positions`) and samplers
(:func:`interpolate`, :func:`lattice_windows`, :func:`lattice_operator`, :func:`sample_windows`,
:func:`transform_image`, :func:`imresize`, :func:`resize_matrix`, :func:`to_mesh`) share one set of conventions:

- plane coordinates ``(x, y)``: ``x`` along columns, ``y`` up (against rows); ``pi_A[r](p) = r(A^-1 p)``, so
  a positive angle rotates content counter-clockwise (``torch.rot90(img, k, dims=(-2, -1))``);
- pixel positions ``(row, col)``: row 0, column 0 is the centre of the first pixel; an image's centre is
  ``((H - 1) / 2, (W - 1) / 2)``;
- one cubic kernel, :func:`cubic`: Keys' cubic convolution with ``a = -0.5`` (MATLAB's ``imresize`` and
  ``interp2(..., 'cubic')``). It is interpolating: at integer positions :func:`interpolate` returns the stored
  pixels bit for bit, so quarter turns and axis flips are exact pixel permutations, as the theory requires.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from symmetry.errors import UsageError
from symmetry.groups import GroupElement, is_grid_exact

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
KEYS_A = -0.5  # Keys' cubic convolution parameter used by MATLAB's imresize/interp2 'cubic'
SUPPORT_MARGIN = {"bicubic": 2, "bilinear": 1, "nearest": 1}  # pixels a sample may read beyond its position
_TAPS = {"bicubic": (-1, 4), "bilinear": (0, 2)}  # (offset of the first tap, taps per axis)
_CHUNK = 1 << 16  # points interpolated at once on the CPU (the few (P,) temporaries stay in cache)
_CHANNEL_LOOP = 4  # up to this many channels are gathered one contiguous channel at a time
_RESIZE_WIDTH = 4.0  # support of the cubic kernel in input pixels (before the antialiasing stretch)


# ---- matrices and lattices --------------------------------------------------------------


def rotation_matrix(angle, dtype=torch.float64, device=None) -> torch.Tensor:
    """Counter-clockwise rotation ``R(angle)`` ``(..., 2, 2)`` (angle in radians), batched over ``angle``'s shape.

    Convention: plane coordinates ``(x, y)``, ``x`` along columns, ``y`` up, as every matrix of
    :mod:`symmetry.groups`. Differentiable in ``angle``; ``cos``/``sin`` as computed, so quarter turns are exact
    only up to rounding (use :func:`symmetry.groups.turn_matrix` for exact ones).
    """
    angle = torch.as_tensor(angle, dtype=dtype, device=device)
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def deformation_matrix(theta0, cx, cy, dtype=torch.float64, device=None) -> torch.Tensor:
    """``D = R(theta0) diag(cx, cy)`` ``(..., 2, 2)``: SA-Conv's mesh deformation ``D_w`` (theory.md, section 3).

    Convention: plane coordinates ``(x, y)`` as :func:`rotation_matrix`, ``theta0`` in radians; the filter for
    group element ``A`` is evaluated at ``A^-1 D^-1 delta``. Differentiable in all three arguments, which
    broadcast together.
    """
    theta0, cx, cy = (torch.as_tensor(v, dtype=dtype, device=device) for v in (theta0, cx, cy))
    theta0, cx, cy = torch.broadcast_tensors(theta0, cx, cy)
    c, s = torch.cos(theta0), torch.sin(theta0)
    return torch.stack([torch.stack([c * cx, -s * cy], -1), torch.stack([s * cx, c * cy], -1)], -2)


def inverse_deformation_matrix(theta0, cx, cy, dtype=torch.float64, device=None) -> torch.Tensor:
    """``D^-1 = diag(1/cx, 1/cy) R(-theta0)`` ``(..., 2, 2)`` of :func:`deformation_matrix`, in closed form.

    Convention: as :func:`deformation_matrix`; differentiable, broadcast over the three arguments. SA-Conv
    evaluates its filters at ``A^-1 D^-1 delta`` (``analysis.layers.deformation_inverse``).
    """
    theta0, cx, cy = (torch.as_tensor(v, dtype=dtype, device=device) for v in (theta0, cx, cy))
    theta0, cx, cy = torch.broadcast_tensors(theta0, cx, cy)
    c, s = torch.cos(theta0), torch.sin(theta0)
    return torch.stack([torch.stack([c / cx, s / cx], -1), torch.stack([-s / cy, c / cy], -1)], -2)


def _in_disk(squared_norm: torch.Tensor, radius: float) -> torch.Tensor:
    """The one disk test of the project: ``|p|^2 <= radius^2`` with a 1e-9 tolerance for lattice points on the rim."""
    return squared_norm <= radius * radius + 1e-9


def disk_offsets(radius: float, mesh: float, device=None) -> torch.Tensor:
    """Lattice offsets ``(x, y)`` (in mesh units) of a disk of physical radius ``radius`` at mesh ``mesh``: ``(P, 2)``.

    Convention: ``(x, y)`` as :func:`rotation_matrix`, centred on the origin, float64 integers, in row-major order
    (top row first, left to right); the physical offset of a point is ``mesh * offset``. Fixing the physical
    radius while ``mesh`` varies is what makes ``eps_G(h)`` comparable across h (theory.md, section 4).
    """
    if radius <= 0 or mesh <= 0:
        raise ValueError(f"window radius and mesh must be > 0, got radius={radius}, mesh={mesh}")
    n = int(math.floor(radius / mesh + 1e-9))
    i = torch.arange(-n, n + 1, dtype=torch.float64, device=device)
    y, x = torch.meshgrid(-i, i, indexing="ij")  # row-major order, y up
    keep = _in_disk((x * x + y * y) * mesh * mesh, radius)
    return torch.stack([x[keep], y[keep]], dim=-1)


def disk_mask(height: int, width: int, radius: float, device=None) -> torch.Tensor:
    """Boolean ``(height, width)`` mask of the pixels within ``radius`` pixels of the image centre.

    Convention: the centre is ``((height - 1) / 2, (width - 1) / 2)`` in pixel positions; the disk test is that
    of :func:`disk_offsets`, so the mask is symmetric under quarter turns and flips.
    """
    r = torch.arange(height, dtype=torch.float64, device=device) - (height - 1) / 2
    c = torch.arange(width, dtype=torch.float64, device=device) - (width - 1) / 2
    return _in_disk(r[:, None] * r[:, None] + c[None, :] * c[None, :], radius)


def window_positions(centers: torch.Tensor, offsets: torch.Tensor, matrices: torch.Tensor):
    """Pixel positions of windows whose grid is transformed by ``A^-1``: ``rows, cols`` of shape ``(G, M, P)``.

    Convention: ``centers`` ``(M, 2)`` are pixel positions ``(row, col)``; ``offsets`` ``(P, 2)`` are plane
    coordinates ``(x, y)`` in pixels; ``matrices`` ``(G, 2, 2)`` are orthogonal (``A^-1 = A^T``). The point of
    offset ``p`` sits at ``center + A^-1 p`` (``y`` up: row ``center_row - (A^-1 p)_y``); nothing is checked
    against the frame here.
    """
    inv = matrices.transpose(-1, -2).to(offsets.dtype)  # orthogonal
    p = torch.einsum("gij,pj->gpi", inv, offsets)  # (G, P, 2)
    rows = centers[None, :, None, 0] - p[:, None, :, 1]
    cols = centers[None, :, None, 1] + p[:, None, :, 0]
    return rows, cols


def lattice_permutations(offsets: torch.Tensor, matrices: torch.Tensor) -> list[torch.Tensor | None]:
    """For each ``A``, the permutation ``perm`` with ``A^-1 offsets[i] == offsets[perm[i]]`` bit for bit, or None.

    Convention: ``offsets`` ``(P, 2)`` and ``matrices`` ``(G, 2, 2)`` as in :func:`window_positions`. Quarter turns
    and axis flips map a disk lattice onto itself with exact arithmetic, so their windows are the identity
    window's samples reordered (same positions, same floating-point values); other elements return None and
    are interpolated.
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


# ---- the cubic kernel (one implementation) ------------------------------------------------


def _cubic_near(s: torch.Tensor) -> torch.Tensor:
    """Keys' cubic for ``0 <= s <= 1``: ``(a + 2) s^3 - (a + 3) s^2 + 1`` (Horner form)."""
    return ((KEYS_A + 2) * s - (KEYS_A + 3)) * s * s + 1


def _cubic_far(s: torch.Tensor) -> torch.Tensor:
    """Keys' cubic for ``1 <= s <= 2``: ``a s^3 - 5 a s^2 + 8 a s - 4 a`` (Horner form); 0 at 1 and 2."""
    return ((KEYS_A * s - 5 * KEYS_A) * s + 8 * KEYS_A) * s - 4 * KEYS_A


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``), support ``[-2, 2]``.

    Convention: ``x`` is a distance in input pixels; ``cubic(0) = 1`` and ``cubic(k) = 0`` exactly at the other
    integers, so resampling at integer positions copies pixels.
    """
    ax = x.abs()
    return torch.where(ax <= 1, _cubic_near(ax), torch.where(ax < 2, _cubic_far(ax), torch.zeros_like(ax)))


def _tap_weights(t: torch.Tensor, method: str) -> list[torch.Tensor]:
    """Weights of the taps along one axis for fractional parts ``t`` in ``[0, 1)``: :func:`cubic` at the tap
    distances ``t + 1, t, 1 - t, 2 - t`` (taps -1 .. 2), or ``1 - t, t`` (taps 0, 1) for bilinear."""
    if method == "bilinear":
        return [1 - t, t]
    return [_cubic_far(t + 1), _cubic_near(t), _cubic_near(1 - t), _cubic_far(2 - t)]


# ---- samplers ---------------------------------------------------------------------------


def interpolate(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, method: str = "bicubic") -> torch.Tensor:
    """Sample ``image`` ``(C, H, W)`` at continuous pixel positions ``rows``, ``cols`` (same shape); ``(C, *shape)``.

    Convention: positions in pixel units, row 0, column 0 the first pixel's centre; ``bicubic`` is
    :func:`cubic` (4 x 4 taps), ``bilinear`` 2 x 2 taps, ``nearest`` rounds half to even. Out of frame: taps
    are clamped to the border (the image is extended by replicating its edge); callers keep their samples at
    least :data:`SUPPORT_MARGIN` pixels inside when the border must not matter. At integer positions the
    result is the stored pixel bit for bit (finite images).

    Fused and separable: per chunk of points, each tap is one gather of ``P`` values accumulated in place,
    ``sum_i w_row[i] * sum_j w_col[j] * image[r0 + i, c0 + j]``, so the only temporaries are a few ``(P,)``
    vectors (no ``(P, 16)`` index or value arrays). Differentiable in ``image`` and in the positions.
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {', '.join(INTERPOLATIONS)}")
    c, h, w = image.shape
    shape = rows.shape
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    if method == "nearest":
        r = torch.round(rows).long().clamp(0, h - 1)
        q = torch.round(cols).long().clamp(0, w - 1)
        return image.reshape(c, h * w)[:, r * w + q].reshape(c, *shape)
    first, count = _TAPS[method]
    # taps floor(x) + first .. floor(x) + first + count - 1 lie inside when first <= floor(x) <= size - count - first
    inside = rows.numel() > 0 and bool(
        (rows.min() >= -first) & (rows.max() < h - count - first + 1)
        & (cols.min() >= -first) & (cols.max() < w - count - first + 1)
    )  # fmt: skip
    pad = 0 if inside else count - 1
    if pad:  # replicate the edge; clamping floor(x) to [1 - first - count, size - 1 - first] then changes no tap
        canvas = F.pad(image[None], (pad, pad, pad, pad), mode="replicate")[0]
    else:
        canvas = image
    width = w + 2 * pad
    flat = canvas.reshape(c, -1)
    if c > _CHANNEL_LOOP:  # many channels: channels last, each tap gathers (P, C) rows
        channels_last = flat.T.contiguous()
        tap_offsets = [i * width + j for i in range(count) for j in range(count)]
    else:  # few channels: one contiguous 1D view per (channel, tap), gathered with the same base index
        views = [[flat[k, i * width + j :] for i in range(count) for j in range(count)] for k in range(c)]
    out = torch.empty(c, rows.numel(), dtype=image.dtype, device=image.device)
    chunk = _CHUNK if image.device.type == "cpu" else 64 * _CHUNK
    for s in range(0, rows.numel(), chunk):
        r, q = rows[s : s + chunk], cols[s : s + chunk]
        r0, q0 = torch.floor(r), torch.floor(q)
        both = _tap_weights(torch.stack([r - r0, q - q0]).to(image.dtype), method)  # rows and columns at once
        wr, wq = [v[0] for v in both], [v[1] for v in both]
        ri, qi = r0.to(torch.int64), q0.to(torch.int64)
        if pad:
            ri.clamp_(1 - first - count, h - 1 - first)
            qi.clamp_(1 - first - count, w - 1 - first)
        base = (ri + (first + pad)) * width + (qi + (first + pad))  # flat index of the first tap
        if c > _CHANNEL_LOOP:
            out[:, s : s + chunk] = _accumulate(
                lambda i, j, base=base: channels_last.index_select(0, base + tap_offsets[i * count + j]),
                [v[:, None] for v in wr],
                [v[:, None] for v in wq],
            ).T
        else:
            for k in range(c):
                out[k, s : s + chunk] = _accumulate(
                    lambda i, j, k=k, base=base: views[k][i * count + j].index_select(0, base), wr, wq
                )
    return out.reshape(c, *shape)


def _lines(values: torch.Tensor, tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct ``values`` (sorted; equal within ``tol``) and the index of each value's line."""
    return _cached(_LINES, (values.numpy().tobytes(), tol), lambda: _distinct(values, tol))


_LINES: OrderedDict = OrderedDict()  # the lines of the lattices in use (a few per run), by their values


def _cached(cache: OrderedDict, key, make):
    """``cache[key]``, made by ``make()`` on a miss; the 64 most recent entries are kept."""
    hit = cache.get(key)
    if hit is None:
        hit = cache[key] = make()
        while len(cache) > 64:
            cache.popitem(last=False)
    return hit


def _distinct(values: torch.Tensor, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(values)
    ordered = values[order]
    new_line = torch.cat([torch.ones(1, dtype=torch.bool), ordered[1:] - ordered[:-1] > tol])
    line = torch.cumsum(new_line, 0) - 1
    index = torch.empty_like(line)
    index[order] = line
    return ordered[new_line], index


def _unit_steps(lines: torch.Tensor) -> bool:
    """Whether the lines are one pixel apart (the identity, quarter turns and flips of an integer lattice)."""
    return len(lines) < 2 or bool(((lines[1:] - lines[:-1]) - 1).abs().max() < 1e-9)


def _shifted(block: torch.Tensor, fraction: torch.Tensor, lines: int, dim: int, method: str) -> torch.Tensor:
    """``block`` ``(C, M, ...)`` filtered along ``dim`` at ``lines`` positions one pixel apart whose fractional part
    is ``fraction[m]``: each tap is a shifted slice times one weight per window (no gathers)."""
    first, count = _TAPS[method]
    weights = _tap_weights(fraction.to(block.dtype), method)
    shape = [len(fraction), 1, 1]  # (M, 1, 1) against the block's (C, M, rows, cols)
    out = block.narrow(dim, 0, lines) * weights[0].view(shape)
    for t in range(1, count):
        out.addcmul_(block.narrow(dim, t, lines), weights[t].view(shape))
    return out


def _tap_matrix(positions: torch.Tensor, start: torch.Tensor, size: int, method: str) -> torch.Tensor:
    """``(M, L, size)``: row ``l`` of window ``m`` holds the taps' weights of ``positions[m, l]`` at their pixels,
    counted from ``start[m]``; a product with it interpolates along one axis."""
    first, count = _TAPS[method]
    base = torch.floor(positions)
    weights = torch.stack(_tap_weights(positions - base, method), -1)  # (M, L, count)
    columns = (base.long() + first - start[:, None])[..., None] + torch.arange(count, device=positions.device)
    out = positions.new_zeros(*positions.shape, size)
    return out.scatter_(-1, columns, weights)


def lattice_windows(
    image: torch.Tensor,
    centers: torch.Tensor,
    offsets: torch.Tensor,
    matrix: torch.Tensor,
    method: str = "bicubic",
) -> torch.Tensor:
    """Windows of ``image`` ``(C, H, W)`` on the lattice ``offsets`` transformed by ``matrix^-1`` and moved to
    ``centers``: ``(C, M, P)``, the values of :func:`interpolate` at :func:`window_positions` (to rounding).

    Convention: as :func:`window_positions` for one orthogonal ``matrix`` ``(2, 2)``. Separable along lattice
    lines: a point's row depends only on its offset's ``y' = (A^-1 p)_y``, its column only on ``x'``. When the
    lattice has few distinct ``y'`` and ``x'`` (``Ly`` and ``Lx``: 2n + 1 each for the identity and the
    quarter turns, about 1.4 (2n + 1) for the 45-degree turns, against ``P ~ pi n^2`` points), every window's
    bicubic samples on the ``Ly x Lx`` grid of those lines are two small products with the block of pixels
    around it, ``Wy @ block @ Wx^T`` (each row of ``Wy``, ``Wx`` holds one position's 4 taps), and the lattice
    points are picked from the grid: about ``(Ly + Lx) * block`` multiply-adds per window instead of 16 gathers
    and products per point. Positions on one line agree to 1e-9 px (the line's first is used). Out of frame,
    ``nearest``, or a lattice with many lines (general angles): :func:`interpolate` itself (taps clamped).
    """

    def pointwise() -> torch.Tensor:
        rows, cols = window_positions(centers, offsets, matrix[None].to(offsets))
        return interpolate(image, rows[0], cols[0], method)

    if method == "nearest" or len(centers) == 0 or len(offsets) == 0:
        return pointwise()
    first, count = _TAPS[method]
    c, height, width = image.shape
    # (P, 2): A^-1 p as in window_positions (A^-1 = A^T), in float64 so that float32 matrices (a GPU run) keep
    # their lines' exact structure
    moved = offsets.detach().cpu().double() @ matrix.detach().cpu().double()
    y_lines, y_index = _lines(-moved[:, 1])  # row offsets -y' of the lines, ascending
    x_lines, x_index = _lines(moved[:, 0])
    if len(y_lines) * len(x_lines) > 8 * len(offsets):  # no line structure: the grid would cost more than taps
        return pointwise()
    y_pos = centers[:, :1] + y_lines.to(centers)[None]  # (M, Ly): the rows of each window's lines
    x_pos = centers[:, 1:] + x_lines.to(centers)[None]  # (M, Lx): their columns
    top = torch.floor(y_pos[:, 0]).long() + first
    left = torch.floor(x_pos[:, 0]).long() + first
    block_rows = int((torch.floor(y_pos[:, -1]).long() + first + count - top).max())
    block_cols = int((torch.floor(x_pos[:, -1]).long() + first + count - left).max())
    if bool((top.min() < 0) | (left.min() < 0) | ((top + block_rows).max() > height)) or bool(
        (left + block_cols).max() > width
    ):
        return pointwise()
    block = image.unfold(1, block_rows, 1).unfold(2, block_cols, 1)[:, top, left]  # (C, M, Hb, Wb), one gather
    if _unit_steps(y_lines) and _unit_steps(x_lines):  # lines one pixel apart: one fraction per window and axis
        grid = _shifted(block, y_pos[:, 0] - torch.floor(y_pos[:, 0]), len(y_lines), -2, method)
        grid = _shifted(grid, x_pos[:, 0] - torch.floor(x_pos[:, 0]), len(x_lines), -1, method)
    else:
        along_y = _tap_matrix(y_pos.to(image.dtype), top, block_rows, method)  # (M, Ly, Hb)
        along_x = _tap_matrix(x_pos.to(image.dtype), left, block_cols, method)  # (M, Lx, Wb)
        along_rows = along_y @ block  # (C, M, Ly, Wb)
        parts, pick = _grid_parts(y_index, x_index)
        grids = [along_rows[..., u, :] @ along_x[:, v].transpose(-1, -2) for u, v in parts]  # (C, M, |u|, |v|)
        flat = torch.cat([g.reshape(c, len(centers), -1) for g in grids], -1)
        return flat.index_select(-1, pick.to(image.device))
    pick = (y_index * len(x_lines) + x_index).to(image.device)
    return grid.reshape(c, len(centers), -1).index_select(-1, pick)


def _grid_parts(y_index: torch.Tensor, x_index: torch.Tensor) -> tuple[list, torch.Tensor]:
    """:func:`_checkerboard` of a lattice's line indices, cached (a few lattices per run)."""
    key = (y_index.numpy().tobytes(), x_index.numpy().tobytes())
    return _cached(_PARTS, key, lambda: _checkerboard(y_index, x_index))


_PARTS: OrderedDict = OrderedDict()


def _checkerboard(y_index: torch.Tensor, x_index: torch.Tensor) -> tuple[list, torch.Tensor]:
    """The sub-grids of lines that hold the lattice points, and each point's place in them, concatenated.

    At 45 degrees a point's two line indices have one parity (``x' - y'`` and ``x' + y'`` differ by ``2 y``), so
    the points fill a checkerboard of the grid: two sub-grids (even rows with the even or odd columns, odd rows
    with the others) hold them all at half the cost. Otherwise one grid of all lines.
    """
    parity = (y_index + x_index) % 2
    rows, cols = int(y_index.max()) + 1, int(x_index.max()) + 1
    if not bool((parity == parity[0]).all()):
        return [(torch.arange(rows), torch.arange(cols))], y_index * cols + x_index
    parts, pick, start = [], torch.empty_like(y_index), 0
    for p in (0, 1):
        u = torch.arange(p, rows, 2)
        v = torch.arange(int((parity[0] - p) % 2), cols, 2)
        mine = y_index % 2 == p
        pick[mine] = start + (y_index[mine] // 2) * len(v) + x_index[mine] // 2
        parts.append((u, v))
        start += len(u) * len(v)
    return parts, pick


def _accumulate(gather, wr: list[torch.Tensor], wq: list[torch.Tensor]) -> torch.Tensor:
    """``sum_i wr[i] * sum_j wq[j] * gather(i, j)``, summed in this order with one running sum per level."""
    total = None
    for i, a in enumerate(wr):
        row = gather(i, 0) * wq[0]
        for j in range(1, len(wq)):
            row.addcmul_(gather(i, j), wq[j])
        if total is None:
            total = row * a
        else:
            total.addcmul_(row, a)
    return total


def lattice_operator(
    matrices: torch.Tensor, source: torch.Tensor, target: torch.Tensor, method: str = "bicubic"
) -> torch.Tensor:
    """``pi~_A`` as matrices ``T`` ``(G, P_target, P_source)`` on values at lattice points: ``(pi~_A y)[t] = T y``.

    Convention: ``source`` ``(P_s, 2)`` and ``target`` ``(P_t, 2)`` are integer lattice offsets ``(x, y)``
    (``y`` up) in mesh units; ``matrices`` ``(G, 2, 2)`` rotate about the lattice origin; the value at target
    ``t`` is ``y`` interpolated at ``A^-1 t`` with :func:`interpolate`'s weights (``cubic``). Out of frame:
    ``y`` is zero off the source points, so a tap there is dropped and its row sums to less than 1.
    Grid-exact ``A`` (entries in {-1, 0, 1}) use ``nearest``: ``T`` is then a 0/1 selection, exactly.
    """
    if method not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {method!r}; choose one of {', '.join(INTERPOLATIONS)}")
    src = source.round().long()
    m = int(src.abs().max()) if src.numel() else 0
    side = 2 * m + 1
    lookup = torch.full((side, side), -1, dtype=torch.long)  # canvas row m - y, column m + x -> source index
    lookup[m - src[:, 1], m + src[:, 0]] = torch.arange(len(src))
    matrices = matrices.to(torch.float64)
    rows, cols = window_positions(torch.zeros(1, 2, dtype=torch.float64), target.to(torch.float64), matrices)
    out = torch.zeros(len(matrices), len(target), len(src), dtype=torch.float64)
    point = torch.arange(len(target))
    for g in range(len(matrices)):
        r, q = rows[g, 0], cols[g, 0]
        if method == "nearest" or is_grid_exact(matrices[g]):
            tr, tq, weight = torch.round(r).long()[:, None], torch.round(q).long()[:, None], torch.ones(len(r), 1)
        else:
            first, count = _TAPS[method]
            r0, q0 = torch.floor(r), torch.floor(q)
            wr, wq = torch.stack(_tap_weights(r - r0, method), -1), torch.stack(_tap_weights(q - q0, method), -1)
            taps = torch.arange(first, first + count)
            tr = (r0.long()[:, None] + taps)[:, :, None].expand(-1, count, count).reshape(len(r), -1)
            tq = (q0.long()[:, None] + taps)[:, None, :].expand(-1, count, count).reshape(len(r), -1)
            weight = (wr[:, :, None] * wq[:, None, :]).reshape(len(r), -1)
        cr, cc = tr + m, tq + m
        valid = (cr >= 0) & (cr < side) & (cc >= 0) & (cc < side)
        index = torch.where(valid, lookup[cr.clamp(0, side - 1), cc.clamp(0, side - 1)], -1)
        keep = index >= 0
        p = point[:, None].expand_as(index)
        out[g].index_put_((p[keep], index[keep]), weight.to(torch.float64).expand_as(index)[keep], accumulate=True)
    return out


def sample_windows(
    image: torch.Tensor,
    centers: torch.Tensor,
    offsets: torch.Tensor,
    matrices: torch.Tensor,
    method: str = "bicubic",
) -> torch.Tensor:
    """Windows of ``image`` ``(C, H, W)`` on the grid transformed by each ``A^-1``: ``(G, M, C, P)``.

    Convention: ``centers``, ``offsets``, ``matrices`` as in :func:`window_positions`; sampled with
    :func:`interpolate` (taps out of frame clamped to the border). Elements that permute the offsets (quarter
    turns and flips of a disk lattice, see :func:`lattice_permutations`) reuse the identity window's samples,
    bit for bit.
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

    Convention: the image rotates about its centre ``((H - 1) / 2, (W - 1) / 2)``. Grid-exact elements (quarter
    turns, axis flips) give exact pixel permutations, with height and width swapped for odd quarter turns
    (``torch.rot90`` / ``torch.flip``). Other elements keep the frame and use :func:`interpolate`; out of
    frame: pixels whose source lies outside the image are set to 0 and marked ``False`` in the mask.
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


# ---- MATLAB-compatible resizing ------------------------------------------------------------


@lru_cache(maxsize=64)
def contributions(
    in_length: int, out_length: int, scale: float, antialias: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(out_length, T)`` (float64) and 0-based input indices ``(out_length, T)`` of one resized axis.

    Convention: MATLAB's ``contributions`` in ``imresize.m``: output pixel ``x`` (1-based) reads input position
    ``u = x / scale + (1 - 1 / scale) / 2``; when downscaling with ``antialias`` the kernel is stretched to
    ``scale * cubic(scale * t)`` (support ``4 / scale``); each row is normalised to sum to one. Out of frame:
    taps are mirrored (symmetric padding ``..., 2, 1, 1, 2, ...``). Cached: do not modify the returned tensors.
    """
    stretch = scale if antialias and scale < 1 else 1.0
    kernel_width = _RESIZE_WIDTH / stretch
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based, may be out of range
    distance = u[:, None] - indices
    weights = stretch * cubic(stretch * distance) if stretch != 1 else cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)
    aux = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])  # 1..n, n..1 repeated
    idx = aux[torch.remainder(indices.long() - 1, 2 * in_length)]
    keep = (weights != 0).any(dim=0)  # drop all-zero tap columns, as MATLAB does
    return weights[:, keep], idx[:, keep]


@lru_cache(maxsize=64)
def resize_matrix(in_length: int, out_length: int, antialias: bool = True) -> torch.Tensor:
    """:func:`imresize` of one axis from ``in_length`` to ``out_length`` samples as a dense ``(out, in)`` float64
    matrix: resizing ``x`` along that axis is ``M @ x``, equal to :func:`imresize` to rounding (a product sums
    the taps in its own order). Convention: :func:`contributions` with scale ``out / in``; mirrored taps that
    land on one input sample are added. Cached: do not modify the returned tensor.
    """
    weights, idx = contributions(in_length, out_length, out_length / in_length, antialias)
    return torch.zeros(out_length, in_length, dtype=torch.float64).scatter_add_(1, idx, weights)


def output_size(in_length: int, scale: float) -> int:
    """``ceil(scale * in_length)``, ignoring floating-point noise (``99 * (1/3)`` gives 33)."""
    return max(1, math.ceil(scale * in_length - 1e-9))


def _resize_dim(x: torch.Tensor, dim: int, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    """One axis: ``out = sum_k w[:, k] * x[idx[:, k]]``, accumulated tap by tap in a fixed order, so every output
    value is the same float operations whatever the batch shape or device (the SR skip equals the baseline)."""
    weights, idx = contributions(x.shape[dim], out_length, float(scale), antialias)
    weights, idx = weights.to(device=x.device, dtype=x.dtype), idx.to(x.device)
    front = x.movedim(dim, 0)  # the resized axis first: each tap gathers whole contiguous rows
    rest = front.shape[1:]
    front = front.reshape(front.shape[0], -1).contiguous()  # a strided view would make every gather slow
    out = front.index_select(0, idx[:, 0]) * weights[:, :1]
    for k in range(1, idx.shape[1]):
        out = out.addcmul_(front.index_select(0, idx[:, k]), weights[:, k : k + 1])
    return out.reshape(out_length, *rest).movedim(0, dim).contiguous()


def imresize(
    image: torch.Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``(..., H, W)`` float images like MATLAB's ``imresize(image, scale, 'bicubic')``.

    Convention: give ``scale`` (output size ``ceil(scale * H)``, ``ceil(scale * W)``) or ``size=(h, w)`` (then
    each axis's scale is ``h / H``, ``w / W``, as in MATLAB); pixel centres as :func:`contributions` (the image
    corners stay fixed, not the first pixel centres); the axis with the smaller scale is resized first.
    ``antialias`` stretches the kernel when downscaling (MATLAB's default). Out of frame: mirrored taps. The
    dtype and device are kept (computed in the image's dtype); values are not clipped (bicubic overshoots).
    """
    if not torch.is_floating_point(image):
        raise UsageError(f"imresize needs a floating-point image, got {image.dtype}")
    if image.dim() < 2:
        raise UsageError(f"imresize needs (..., H, W) images, got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if (scale is None) == (size is None):
        raise UsageError("give exactly one of scale or size to imresize")
    if size is not None:
        oh, ow = int(size[0]), int(size[1])
        if oh < 1 or ow < 1:
            raise UsageError(f"imresize size must be positive, got {size}")
        scales = (oh / h, ow / w)
    else:
        if not scale > 0:
            raise UsageError(f"imresize scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        oh, ow = output_size(h, scales[0]), output_size(w, scales[1])
    # MATLAB resizes the dimension with the smaller scale first
    order = sorted([(scales[0], -2, oh), (scales[1], -1, ow)], key=lambda t: t[0])
    out = image
    for s, dim, n in order:
        if s == 1 and n == out.shape[dim]:
            continue
        out = _resize_dim(out, dim, n, s, antialias)
    return out


def to_mesh(image: torch.Tensor, mesh: float) -> torch.Tensor:
    """The raster ``Y_h`` of a native-resolution image ``(C, H, W)`` at mesh ``mesh`` (native pixels per sample).

    Convention: :func:`imresize` to ``(round(H / mesh), round(W / mesh))`` (at least 1): ``mesh > 1`` downsamples
    with the antialiased (stretched) cubic, ``mesh < 1`` upsamples with :func:`cubic`; the image corners stay
    fixed; out of frame: mirrored taps. ``mesh == 1`` returns the image itself.
    """
    if mesh == 1:
        return image
    _, h, w = image.shape
    return imresize(image, size=(max(1, round(h / mesh)), max(1, round(w / mesh))))
