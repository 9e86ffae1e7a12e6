"""PSNR and SSIM (BasicSR conventions) against known values and scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from analysis.metrics import psnr, quantize, rgb_to_y, ssim
from symmetry.errors import UsageError


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 40, 52, generator=g, dtype=torch.float64)
    ref = torch.nn.functional.avg_pool2d(ref[None], 3, 1, 1)[0]  # some structure
    img = (ref + 0.05 * torch.randn(ref.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return img, ref


def test_identical_images_give_inf_psnr_and_ssim_one(pair):
    _, ref = pair
    assert psnr(ref, ref).item() == math.inf
    assert psnr(ref, ref, test_y_channel=True).item() == math.inf
    assert ssim(ref, ref).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim(ref, ref, test_y_channel=True).item() == pytest.approx(1.0, abs=1e-12)


def test_offset_of_one_level_gives_20_log10_255(pair):
    _, ref = pair
    shifted = ref + 1 / 255
    assert psnr(shifted, ref).item() == pytest.approx(20 * math.log10(255), abs=1e-9)
    # on Y the offset is (65.481 + 128.553 + 24.966) / 255 = 219 / 255 levels
    y_value = 20 * math.log10(255) - 20 * math.log10(219 / 255)
    assert psnr(shifted, ref, test_y_channel=True).item() == pytest.approx(y_value, abs=1e-9)


def test_psnr_is_10_log10_of_peak_over_mse(pair):
    img, ref = pair
    mse = ((img - ref) * 255).square().mean().item()
    assert psnr(img, ref).item() == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-9)


def test_y_channel_is_bt601_with_explicit_colour_order():
    white, black = torch.ones(3, 2, 2), torch.zeros(3, 2, 2)
    assert torch.allclose(rgb_to_y(white), torch.full((1, 2, 2), 235.0))
    assert torch.allclose(rgb_to_y(black), torch.full((1, 2, 2), 16.0))
    red = torch.zeros(3, 1, 1)
    red[0] = 1
    assert rgb_to_y(red).item() == pytest.approx(16 + 65.481)
    assert rgb_to_y(red.flip(0), color_order="bgr").item() == pytest.approx(16 + 65.481)


def test_bgr_order_scores_channel_reversed_images_the_same(pair):
    img, ref = pair
    a = psnr(img, ref, test_y_channel=True, color_order="rgb")
    b = psnr(img.flip(0), ref.flip(0), test_y_channel=True, color_order="bgr")
    assert a.item() == pytest.approx(b.item(), abs=1e-9)
    with pytest.raises(UsageError, match="color_order"):
        psnr(img, ref, test_y_channel=True, color_order="yuv")


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


def test_ssim_matches_scikit_image(pair):
    img, ref = pair
    per_channel = [_skimage_ssim(img[c].numpy() * 255, ref[c].numpy() * 255) for c in range(3)]
    assert ssim(img, ref).item() == pytest.approx(float(np.mean(per_channel)), abs=1e-4)
    y_img, y_ref = rgb_to_y(img)[0].numpy(), rgb_to_y(ref)[0].numpy()
    assert ssim(img, ref, test_y_channel=True).item() == pytest.approx(_skimage_ssim(y_img, y_ref), abs=1e-4)
    cropped = _skimage_ssim(y_img[4:-4, 4:-4], y_ref[4:-4, 4:-4])
    assert ssim(img, ref, crop_border=4, test_y_channel=True).item() == pytest.approx(cropped, abs=1e-4)


def test_crop_border_ignores_the_border_and_batches_score_per_image(pair):
    img, ref = pair
    framed = ref.clone()
    framed[:, :3] = 0
    framed[:, :, -3:] = 1
    assert psnr(framed, ref, crop_border=3).item() == math.inf
    batch = psnr(torch.stack([img, ref]), torch.stack([ref, ref]))
    assert batch.shape == (2,) and batch[1].item() == math.inf
    assert batch[0].item() == pytest.approx(psnr(img, ref).item())
    assert ssim(torch.stack([img, img]), torch.stack([ref, ref])).shape == (2,)


def test_bad_inputs_are_usage_errors(pair):
    img, ref = pair
    with pytest.raises(UsageError, match="shapes differ"):
        psnr(img, ref[:, :-1])
    with pytest.raises(UsageError, match="crop_border"):
        psnr(img, ref, crop_border=30)
    with pytest.raises(UsageError, match="at least 11x11"):
        ssim(img[:, :8, :8], ref[:, :8, :8])


def test_quantize_rounds_to_8_bit_levels():
    x = torch.tensor([-0.1, 0.0, 0.5, 1.2, 100.4 / 255])
    assert torch.equal(quantize(x), torch.tensor([0.0, 0.0, 128 / 255, 1.0, 100 / 255]))
