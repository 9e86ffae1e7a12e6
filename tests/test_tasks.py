"""MATLAB-compatible bicubic resizing and the restoration tasks (degradations, patches, evaluation sets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from analysis.tasks import (
    SR_SCALES,
    PatchDataset,
    add_noise,
    bicubic_lr,
    eval_examples,
    load_items,
)
from symmetry.errors import UsageError
from symmetry.transforms import imresize

# ---- imresize -------------------------------------------------------------------------


def _keys(t: float) -> float:
    t = abs(t)
    if t <= 1:
        return 1.5 * t**3 - 2.5 * t**2 + 1
    if t <= 2:
        return -0.5 * t**3 + 2.5 * t**2 - 4 * t + 2
    return 0.0


def _reference_1d(signal: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    """MATLAB's imresize along one axis, written per output pixel from its documented algorithm."""
    n = len(signal)
    out_len = math.ceil(scale * n - 1e-9)
    stretch = scale if (antialias and scale < 1) else 1.0
    width = 4.0 / stretch
    out = np.empty(out_len)
    for x in range(1, out_len + 1):
        u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate
        left = math.floor(u - width / 2)
        total, acc = 0.0, 0.0
        for j in range(left, left + math.ceil(width) + 2):
            w = stretch * _keys(stretch * (u - j))
            # symmetric padding: index 0 -> 1, -1 -> 2, n+1 -> n, n+2 -> n-1
            k = j
            while k < 1 or k > n:
                k = 1 - k if k < 1 else 2 * n + 1 - k
            acc += w * signal[k - 1]
            total += w
        out[x - 1] = acc / total
    return out


def _reference_2d(image: np.ndarray, scale: float, antialias: bool = True) -> np.ndarray:
    rows = np.stack([_reference_1d(col, scale, antialias) for col in image.T], axis=1)
    return np.stack([_reference_1d(row, scale, antialias) for row in rows], axis=0)


def test_imresize_matches_published_matlab_values():
    # MATLAB/Octave: imresize(reshape(0:15,4,4)', 0.5, 'bicubic', 'Antialiasing', false)
    img = torch.arange(16, dtype=torch.float64).reshape(4, 4)
    out = imresize(img, 0.5, antialias=False)
    expected = torch.tensor([[2.1875, 4.3125], [10.6875, 12.8125]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.75, 2, 3, 1.5])
@pytest.mark.parametrize("antialias", [True, False])
def test_imresize_matches_per_pixel_reference(scale, antialias):
    rng = np.random.default_rng(0)
    img = rng.random((13, 17))
    ours = imresize(torch.from_numpy(img), scale, antialias=antialias).numpy()
    ref = _reference_2d(img, scale, antialias)
    assert ours.shape == ref.shape == (math.ceil(13 * scale - 1e-9), math.ceil(17 * scale - 1e-9))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3])
def test_constant_image_stays_constant(scale):
    img = torch.full((2, 3, 24, 18), 0.37, dtype=torch.float64)
    torch.testing.assert_close(imresize(img, scale), torch.full_like(imresize(img, scale), 0.37))


def test_linear_ramp_has_known_values_away_from_borders():
    # pixel i (1-based) holds 2i + 1; output pixel x reads the symmetric kernel centred at u(x)
    n = 48
    ramp = (2.0 * torch.arange(1, n + 1, dtype=torch.float64) + 1).repeat(6, 1)
    x = torch.arange(1, 100, dtype=torch.float64)
    for scale, u in ((1 / 2, 2 * x - 0.5), (1 / 3, 3 * x - 1), (1 / 4, 4 * x - 1.5), (2, x / 2 + 0.25)):
        out = imresize(ramp, size=(6, round(n * scale)))[2]  # rows kept, columns resized by scale
        m = out.shape[-1]
        margin = math.ceil(scale * (2 / min(scale, 1) + 1.5)) + 1  # output pixels whose taps reach a border
        inner = slice(margin, m - margin)
        torch.testing.assert_close(out[inner], 2 * u[:m][inner] + 1, rtol=0, atol=1e-12)


def test_imresize_batched_equals_per_image_and_keeps_dtype():
    x = torch.rand(2, 3, 20, 16)
    out = imresize(x, 1 / 4)
    assert out.shape == (2, 3, 5, 4) and out.dtype == torch.float32
    torch.testing.assert_close(out[1, 2], imresize(x[1, 2], 1 / 4))
    assert imresize(x, size=(7, 9)).shape == (2, 3, 7, 9)
    with pytest.raises(UsageError):
        imresize(x)


# ---- degradations ---------------------------------------------------------------------


def test_noise_has_the_requested_sigma_and_is_seeded():
    clean = torch.full((1, 256, 256), 0.5, dtype=torch.float64)
    noisy = add_noise(clean, 25, torch.Generator().manual_seed(3))
    residual = (noisy - clean) * 255
    assert abs(residual.std().item() - 25) < 0.5
    assert abs(residual.mean().item()) < 0.3
    again = add_noise(clean, 25, torch.Generator().manual_seed(3))
    other = add_noise(clean, 25, torch.Generator().manual_seed(4))
    assert torch.equal(noisy, again) and not torch.equal(noisy, other)


def _write_images(folder, sizes, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        arr = (rng.random((h, w, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return f"folder:{folder}"


@pytest.mark.parametrize("scale", SR_SCALES)
def test_sr_items_crop_hr_to_a_multiple_and_make_matlab_lr(tmp_path, scale):
    spec = _write_images(tmp_path / "imgs", [(50, 37), (41, 43), (30, 30), (44, 51)])
    items = load_items("sr", spec, split="train", scale=scale)
    assert len(items) == 3  # every fourth image is held out
    for it in items:
        hr, lr = it.target, it.input
        assert hr.shape[-2] % scale == 0 and hr.shape[-1] % scale == 0
        assert lr.shape[-2:] == (hr.shape[-2] // scale, hr.shape[-1] // scale)
        expected = torch.round(imresize(hr.double(), 1 / scale).clamp(0, 1) * 255) / 255
        torch.testing.assert_close(lr.double(), expected, atol=1e-6, rtol=0)
    test = load_items("sr", spec, split="test", scale=scale)
    assert [it.name for it in test] == ["img3.png"]
    torch.testing.assert_close(bicubic_lr(items[0].target, scale), items[0].input)


def test_bad_scales_and_tasks_are_usage_errors(tmp_path):
    spec = _write_images(tmp_path / "imgs", [(20, 20)] * 2)
    with pytest.raises(UsageError, match="scale 5"):
        load_items("sr", spec, scale=5)
    with pytest.raises(UsageError, match="unknown task"):
        load_items("deblur", spec)
    with pytest.raises(UsageError, match="derain"):
        load_items("derain", spec)


# ---- training patches -----------------------------------------------------------------


@pytest.fixture
def folder_spec(tmp_path):
    return _write_images(tmp_path / "imgs", [(40, 36), (33, 45), (64, 64), (38, 38), (50, 41)])


def test_patches_are_deterministic_and_cover_each_image_once_per_epoch(folder_spec):
    items = load_items("denoise", folder_spec)
    ds = PatchDataset(items, "denoise", patch_size=24, sigma=15, seed=1)
    again = PatchDataset(load_items("denoise", folder_spec), "denoise", patch_size=24, sigma=15, seed=1)
    x, y = ds.batch(range(5, 13))
    x2, y2 = again.batch(range(5, 13))
    assert x.shape == y.shape == (8, 3, 24, 24)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert abs(((x - y) * 255).std().item() - 15) < 1.0
    n = len(ds)
    for epoch in range(3):
        assert sorted(ds.image_of(k) for k in range(epoch * n, (epoch + 1) * n)) == list(range(n))
    other = PatchDataset(items, "denoise", patch_size=24, seed=2)
    assert not torch.equal(other.batch(range(5, 13))[1], y)


def test_sr_patches_pair_lr_and_hr(folder_spec):
    items = load_items("sr", folder_spec, scale=3)
    ds = PatchDataset(items, "sr", patch_size=24, scale=3, augment="dih4")
    x, y = ds.batch(range(6))
    assert x.shape == (6, 3, 8, 8) and y.shape == (6, 3, 24, 24)
    # the LR patch is the MATLAB downscaling of the HR patch away from its border
    inner = imresize(y.double(), 1 / 3)[..., 2:-2, 2:-2]
    assert (inner.clamp(0, 1) - x.double()[..., 2:-2, 2:-2]).abs().max() < 1 / 255 + 1e-6


def test_augmentation_applies_one_grid_exact_element_to_the_same_crop(folder_spec):
    items = load_items("denoise", folder_spec)
    plain = PatchDataset(items, "denoise", patch_size=16, seed=5)
    aug = PatchDataset(items, "denoise", patch_size=16, seed=5, augment="dih4")
    seen = set()
    for k in range(24):
        t0, ta = plain[k][1], aug[k][1]
        variants = [torch.rot90(t0, r, dims=(-2, -1)) for r in range(4)]
        variants += [torch.rot90(t0.flip(-1), r, dims=(-2, -1)) for r in range(4)]
        matches = [i for i, v in enumerate(variants) if torch.equal(v, ta)]
        assert matches, f"sample {k} is not a dih4 transform of the un-augmented crop"
        seen.add(matches[0])
    assert len(seen) > 3


def test_patch_and_group_errors_name_the_problem(folder_spec):
    items = load_items("denoise", folder_spec)
    with pytest.raises(UsageError, match=r"patch size 48 .*\(33x45\).*<= 33"):
        PatchDataset(items, "denoise", patch_size=48)
    with pytest.raises(UsageError, match="quarter turns and flips"):
        PatchDataset(items, "denoise", patch_size=16, augment="rot8")
    with pytest.raises(UsageError, match="unknown group"):
        PatchDataset(items, "denoise", patch_size=16, augment="rot4x")


# ---- evaluation sets ------------------------------------------------------------------


def test_eval_examples_are_deterministic_full_images_or_centre_crops(folder_spec):
    items = load_items("denoise", folder_spec, split="test")
    a = eval_examples(items, "denoise", sigma=25, seed=0)
    b = eval_examples(items, "denoise", sigma=25, seed=0)
    assert a[0].target.shape == items[0].target.shape
    assert torch.equal(a[0].input, b[0].input)
    sr_items = load_items("sr", folder_spec, split="train", scale=2)
    crops = eval_examples(sr_items, "sr", scale=2, crop=21)
    for ex in crops:
        assert ex.target.shape[-2:] == (20, 20) and ex.input.shape[-2:] == (10, 10)


def test_rain100l_pairs(shared_data):
    items = load_items("derain", "rain100l", split="test", data_root=shared_data, max_images=2)
    assert len(items) == 2
    for it in items:
        assert it.input.shape == it.target.shape and it.target.shape[0] == 3
        assert not torch.equal(it.input, it.target)
    ds = PatchDataset(items, "derain", patch_size=64)
    x, y = ds.batch(range(2))
    assert x.shape == y.shape == (2, 3, 64, 64)


def test_derain_gray_builds_on_a_made_up_rain100l(tmp_path):
    """``--task derain --channels gray`` used to crash on an ImportError (LUMA vs LUMA_BT601)."""
    rng = np.random.default_rng(0)
    for folder in ("rain", "norain"):
        (tmp_path / "rain100l" / "test" / folder).mkdir(parents=True)
    rgb = rng.integers(0, 256, size=(2, 6, 8, 3), dtype=np.uint8)
    Image.fromarray(rgb[0]).save(tmp_path / "rain100l" / "test" / "rain" / "norain-1.png")
    Image.fromarray(rgb[1]).save(tmp_path / "rain100l" / "test" / "norain" / "norain-1.png")
    items = load_items("derain", "rain100l", split="test", data_root=tmp_path, channels="gray")
    assert len(items) == 1 and items[0].input.shape == items[0].target.shape == (1, 6, 8)
    luma = (rgb[1] / 255.0) @ np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights
    assert np.allclose(items[0].target[0].double().numpy(), luma, atol=0.5 / 255 + 1e-9)
