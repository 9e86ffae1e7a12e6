"""MATLAB-compatible ``imresize`` (bicubic) in torch, batched.

The super-resolution literature makes its low-resolution inputs with MATLAB's
``imresize(hr, 1/scale, 'bicubic')``; Python ports that differ (OpenCV, PIL,
``torch.nn.functional.interpolate``) change the benchmark numbers by tenths of a dB.
This module reproduces MATLAB's algorithm (``contributions`` in ``imresize.m``):

- Keys' cubic kernel with ``a = -0.5``, support ``[-2, 2]``;
- output pixel ``x`` (1-based) reads input position ``u = x / scale + (1 - 1 / scale) / 2``;
- when downscaling (``scale < 1``) with antialiasing, the kernel is stretched to
  ``scale * cubic(scale * t)`` with support ``4 / scale``;
- the weights of each output pixel are normalised to sum to one;
- taps outside the image are mirrored (symmetric padding: ``..., 2, 1, 1, 2, ...``);
- the output size is ``ceil(scale * input size)``.

Each dimension is one sparse linear map, applied as a gather of the contributing taps
and a weighted sum, so any leading batch/channel dimensions are handled at once.
"""

from __future__ import annotations

import math

import torch

from symmetry.errors import UsageError

KERNEL_WIDTH = 4.0
"""Support of the bicubic kernel in input pixels (before antialiasing stretch)."""


def cubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``)."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def contributions(
    in_length: int, out_length: int, scale: float, antialias: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``(out_length, P)`` (float64) and 0-based input indices ``(out_length, P)`` of one dimension."""
    if antialias and scale < 1:
        kernel_width = KERNEL_WIDTH / scale

        def h(t: torch.Tensor) -> torch.Tensor:
            return scale * cubic(scale * t)

    else:
        kernel_width = KERNEL_WIDTH
        h = cubic
    x = torch.arange(1, out_length + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # 1-based, may be out of range
    weights = h(u[:, None] - indices)
    weights = weights / weights.sum(dim=1, keepdim=True)
    # symmetric padding: 1..n, n..1 repeated
    aux = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])
    idx = aux[torch.remainder(indices.long() - 1, 2 * in_length)]
    keep = (weights != 0).any(dim=0)  # drop all-zero tap columns, as MATLAB does
    return weights[:, keep], idx[:, keep]


def output_size(in_length: int, scale: float) -> int:
    """``ceil(scale * in_length)``, ignoring floating-point noise (``99 * (1/3)`` gives 33)."""
    return max(1, math.ceil(scale * in_length - 1e-9))


def _resize_dim(x: torch.Tensor, dim: int, out_length: int, scale: float, antialias: bool) -> torch.Tensor:
    in_length = x.shape[dim]
    weights, idx = contributions(in_length, out_length, scale, antialias)
    weights = weights.to(device=x.device, dtype=x.dtype)
    idx = idx.to(x.device)
    x = x.movedim(dim, -1)  # (..., in)
    taps = x[..., idx]  # (..., out, P)
    out = (taps * weights).sum(-1)
    return out.movedim(-1, dim)


def imresize(
    image: torch.Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """Resize ``(..., H, W)`` float images like MATLAB's ``imresize(image, scale, 'bicubic')``.

    Give ``scale`` (output size ``ceil(scale * H)``, ``ceil(scale * W)``) or ``size=(h, w)``
    (then each dimension's scale is ``h / H``, ``w / W``, as in MATLAB). ``antialias``
    stretches the kernel when downscaling (MATLAB's default). The dtype and device are kept;
    values are not clipped (bicubic overshoots).
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


__all__ = ["imresize", "cubic", "contributions", "output_size"]
