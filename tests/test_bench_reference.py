"""The batched estimator equals the window-by-window NumPy reference of benchmarks/reference.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import symmetry
from benchmarks.reference import ReferenceMMD, bicubic, bilinear, disk_lattice
from symmetry.settings import window_scale
from symmetry.sources import ImageSource
from symmetry.transforms import disk_offsets, interpolate

SMALL = dict(radius=6.0, windows=12, features=48, bandwidth=1.5)
API = {**SMALL, "bandwidth": 1.5 / window_scale(6.0)}  # measure_dataset takes sigma in standardised units
MESHES = (2.0, 1.0)


@pytest.fixture(scope="module")
def images() -> list[ImageSource]:
    """Two 48x48 gray images: smooth structure plus texture, so that rotations change them."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:48] / 48.0
    out = []
    for i in range(2):
        pixels = np.sin(6 * x + 3 * i) * np.cos(4 * y * (i + 1)) + 0.3 * rng.random((48, 48))
        out.append(ImageSource(f"image{i}", array=torch.from_numpy(pixels[None])))
    return out


def per_element(report, mesh: float, names: list[str]) -> np.ndarray:
    frame = report.to_frame()
    frame = frame[frame["mesh"] == mesh].set_index("statistic")
    return frame.loc[names, "symmetry_error"].to_numpy()


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_batched_estimator_equals_reference(images, interpolation):
    group = symmetry.get_group("rot8")
    reference = ReferenceMMD(group, MESHES, interpolation=interpolation, **SMALL).run(images)
    fast32 = symmetry.measure_dataset(
        images, group, mesh=MESHES, interpolation=interpolation, device="cpu", dtype=torch.float32, **API
    )
    fast64 = symmetry.measure_dataset(images, group, mesh=MESHES, interpolation=interpolation, device="cpu", **API)
    for h in MESHES:
        ref = reference[h][1:]
        assert np.abs(ref).max() > 0 and np.ptp(ref) > 0  # non-trivial values to compare
        scale = np.abs(ref).max()
        # float32 features (the GPU default) agree to 1e-3 of the largest error; float64 (the CPU default) to rounding
        assert np.abs(per_element(fast32, h, group.names[1:]) - ref).max() <= 1e-3 * scale
        assert np.abs(per_element(fast64, h, group.names[1:]) - ref).max() <= 1e-9 * scale


def test_reference_interpolation_matches_library_on_positions_near_the_border():
    rng = np.random.default_rng(1)
    image = rng.random((2, 9, 11))
    rows, cols = rng.uniform(-3, 12, 400), rng.uniform(-3, 14, 400)
    as_torch = [torch.from_numpy(a) for a in (image, rows, cols)]
    for method, ref in (("bicubic", bicubic), ("bilinear", bilinear)):
        np.testing.assert_allclose(interpolate(*as_torch, method).numpy(), ref(image, rows, cols), atol=1e-12)


@pytest.mark.parametrize("mesh", [2.0, 1.0, 0.5, 0.75])
def test_reference_disk_is_the_library_disk(mesh):
    np.testing.assert_array_equal(disk_lattice(6.0, mesh), disk_offsets(6.0, mesh).numpy())
