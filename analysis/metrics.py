"""Restoration metrics as the BasicSR toolbox computes them: PSNR and SSIM.

Images are float tensors in ``[0, 1]``, ``(C, H, W)`` or ``(B, C, H, W)``. The colour
order matters only for the Y channel and is an explicit argument (``color_order``, RGB by
default); nothing is inferred. Both metrics work on the ``[0, 255]`` scale, as BasicSR's
``calculate_psnr`` / ``calculate_ssim`` do:

- ``crop_border`` pixels are removed from every side first (super-resolution uses the
  scale factor);
- ``test_y_channel=True`` scores the ITU-R BT.601 luma of 3-channel images,
  ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (``R, G, B`` in ``[0, 1]``, ``Y`` in
  ``[16, 235]``); 1-channel images are scored as they are;
- PSNR is ``10 log10(255^2 / MSE)`` over all pixels and channels of an image (``inf`` for
  identical images);
- SSIM is Wang et al.'s index with an 11x11 Gaussian window of sigma 1.5,
  ``C1 = (0.01 * 255)^2``, ``C2 = (0.03 * 255)^2``, the map averaged over the 'valid'
  region (the window fully inside) and then over channels.

Each function returns one value per image: a 0-d tensor for ``(C, H, W)``, shape
``(B,)`` for a batch. Computation is in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from symmetry.errors import UsageError

Y_WEIGHTS_RGB = (65.481, 128.553, 24.966)
"""ITU-R BT.601 luma weights for R, G, B in [0, 1] giving Y on the [0, 255] scale (offset 16)."""
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
COLOR_ORDERS = ("rgb", "bgr")


def _check_pair(img: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    if img.shape != ref.shape:
        raise UsageError(f"image shapes differ: {tuple(img.shape)} vs {tuple(ref.shape)}")
    if img.dim() not in (3, 4):
        raise UsageError(f"images must be (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}")
    single = img.dim() == 3
    if single:
        img, ref = img[None], ref[None]
    return img.double(), ref.double(), single


def rgb_to_y(img: torch.Tensor, color_order: str = "rgb") -> torch.Tensor:
    """BT.601 luma ``(..., 1, H, W)`` on the [16, 235] scale of 3-channel ``[0, 1]`` images in ``color_order``."""
    if color_order not in COLOR_ORDERS:
        raise UsageError(f"color_order must be one of {', '.join(COLOR_ORDERS)}, got {color_order!r}")
    if img.shape[-3] != 3:
        raise UsageError(f"the Y channel needs 3-channel images, got {img.shape[-3]} channels")
    w = torch.tensor(Y_WEIGHTS_RGB, dtype=img.dtype, device=img.device)
    if color_order == "bgr":
        w = w.flip(0)
    return 16.0 + (img * w[:, None, None]).sum(dim=-3, keepdim=True)


def _prepare(
    img: torch.Tensor, ref: torch.Tensor, crop_border: int, test_y_channel: bool, color_order: str
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Both images as float64 ``(B, C, H, W)`` on the [0, 255] scale, cropped and (optionally) luma."""
    img, ref, single = _check_pair(img, ref)
    if crop_border < 0:
        raise UsageError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        h, w = img.shape[-2:]
        if 2 * crop_border >= min(h, w):
            raise UsageError(f"crop_border {crop_border} leaves nothing of a {h}x{w} image")
        img = img[..., crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[..., crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel and img.shape[1] == 3:
        return rgb_to_y(img, color_order), rgb_to_y(ref, color_order), single
    if color_order not in COLOR_ORDERS:
        raise UsageError(f"color_order must be one of {', '.join(COLOR_ORDERS)}, got {color_order!r}")
    return img * 255.0, ref * 255.0, single


def psnr(
    img: torch.Tensor,
    ref: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    color_order: str = "rgb",
) -> torch.Tensor:
    """PSNR in dB of ``img`` against ``ref`` (both in ``[0, 1]``, channels in ``color_order``), BasicSR style.

    ``inf`` where the images are identical (after cropping / luma conversion).
    """
    a, b, single = _prepare(img, ref, crop_border, test_y_channel, color_order)
    mse = (a - b).square().flatten(1).mean(1)
    out = torch.where(mse == 0, torch.full_like(mse, math.inf), 10.0 * torch.log10(255.0**2 / mse))
    return out[0] if single else out


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64, device=None):
    """Normalised 1-D Gaussian ``(size,)`` (``cv2.getGaussianKernel``)."""
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA, dtype=torch.float64, device=None):
    """Normalised 2-D Gaussian window ``(size, size)`` (``cv2.getGaussianKernel`` outer product)."""
    g = _gaussian_1d(size, sigma, dtype, device)
    return g[:, None] * g[None, :]


def ssim(
    img: torch.Tensor,
    ref: torch.Tensor,
    crop_border: int = 0,
    test_y_channel: bool = False,
    color_order: str = "rgb",
) -> torch.Tensor:
    """SSIM of ``img`` against ``ref`` (both in ``[0, 1]``, channels in ``color_order``), BasicSR style.

    Gaussian 11x11 window, sigma 1.5, on the [0, 255] scale; the SSIM map is averaged over
    the valid region of each channel, then over channels.
    """
    a, b, single = _prepare(img, ref, crop_border, test_y_channel, color_order)
    c = a.shape[1]
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise UsageError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(a.shape[-2:])}")
    g = _gaussian_1d(dtype=a.dtype, device=a.device)
    rows, cols = g.view(1, 1, -1, 1).expand(c, 1, -1, 1), g.view(1, 1, 1, -1).expand(c, 1, 1, -1)

    def filt(t: torch.Tensor) -> torch.Tensor:  # the 2-D window is an outer product: two 1-D passes, ~5x faster
        return F.conv2d(F.conv2d(t, rows, groups=c), cols, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(a * a) - mu1_sq
    s2 = filt(b * b) - mu2_sq
    s12 = filt(a * b) - mu12
    ssim_map = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    out = ssim_map.flatten(2).mean(2).mean(1)
    return out[0] if single else out


def quantize(img: torch.Tensor) -> torch.Tensor:
    """Clip to ``[0, 1]`` and round to 8-bit levels (what saving a PNG does; BasicSR's ``tensor2img``)."""
    return torch.round(img.clamp(0, 1) * 255.0) / 255.0


__all__ = ["psnr", "ssim", "rgb_to_y", "gaussian_window", "quantize", "Y_WEIGHTS_RGB"]
