"""The action pi~_A of a transformation on pixel arrays (theory.md, sections 1 and 4).

Plane coordinates are ``(x, y)`` with ``x`` along columns and ``y`` up (against rows),
centred on the image; ``pi_A[r](p) = r(A^-1 p)``. All sampling goes through
:func:`interpolate`, a gather-based interpolation in torch (no NumPy round trips), so
that at integer positions it returns the stored pixels bit for bit: quarter turns and
axis flips are then exact pixel permutations, as the theory requires.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from symmetry.groups import GroupElement

INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
KEYS_A = -0.5  # Keys' cubic convolution parameter used by MATLAB's imresize/interp2 'cubic'
SUPPORT_MARGIN = {"bicubic": 2, "bilinear": 1, "nearest": 1}  # pixels a sample may read beyond its position


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
    r0, q0 = torch.floor(rows), torch.floor(cols)
    tr, tq = (rows - r0).to(image.dtype), (cols - q0).to(image.dtype)
    if method == "bilinear":
        taps = torch.arange(0, 2, device=image.device)
        wr = torch.stack([1 - tr, tr], dim=-1)
        wq = torch.stack([1 - tq, tq], dim=-1)
    else:
        taps = torch.arange(-1, 3, device=image.device)
        wr, wq = _cubic_weights(tr), _cubic_weights(tq)
    ri = (r0.long()[:, None] + taps).clamp(0, h - 1)  # (P, T)
    qi = (q0.long()[:, None] + taps).clamp(0, w - 1)
    idx = ri[:, :, None] * w + qi[:, None, :]  # (P, T, T)
    vals = flat[:, idx.reshape(-1)].reshape(c, *idx.shape)  # (C, P, T, T)
    out = (vals * wq[None, :, None, :]).sum(-1)  # along columns first
    out = (out * wr[None]).sum(-1)
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


def sample_windows(
    image: torch.Tensor,
    centers: torch.Tensor,
    offsets: torch.Tensor,
    matrices: torch.Tensor,
    method: str = "bicubic",
) -> torch.Tensor:
    """Windows of ``image`` ``(C, H, W)`` on the grid transformed by each ``A^-1``: ``(G, M, C, P)``."""
    rows, cols = window_positions(centers, offsets, matrices)
    out = interpolate(image, rows, cols, method)  # (C, G, M, P)
    return out.permute(1, 2, 0, 3)


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
