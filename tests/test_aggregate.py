"""The aggregated default test (docs/symmetry.md, "The default test"): several kernels and scales under one
threshold calibrated by the shared randomisation null (symmetry.estimators.min_p_aggregate)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import symmetry
from symmetry.errors import UsageError
from symmetry.estimators import holm, min_p_aggregate
from symmetry.settings import AGGREGATE, Settings
from symmetry.sources import ImageSource
from tests.test_calibration import anisotropic_images, symmetrised


def test_min_p_known_values():
    """Hand-computed: ranks per column over the 4 draws, S = (.25, .75, .5, .25), so p = #{S <= .25} / 4."""
    p, raw, adjusted = min_p_aggregate([3.0, 1.0], [[1.0, 0.0], [2.0, 2.0], [0.0, 3.0]])
    assert p == 0.5
    np.testing.assert_allclose(raw, [0.25, 0.75])
    np.testing.assert_allclose(adjusted, [0.5, 1.0])


def test_identical_statistics_cost_nothing_but_holm_pays_for_them():
    """Perfectly correlated rows (rot90 and rot270, or one kernel twice): one threshold gives the single p-value,
    a union bound multiplies it (the cause of adjusted p-values piled at 1 on symmetric data)."""
    rng = np.random.default_rng(0)
    null = rng.standard_normal((999, 1))
    single, _, _ = min_p_aggregate([2.0], null)
    p, raw, _ = min_p_aggregate([2.0, 2.0, 2.0], np.repeat(null, 3, axis=1))
    assert p == single and np.all(raw == single)
    assert holm(raw).min() == pytest.approx(3 * single)


def test_missing_columns_are_left_out():
    p, raw, adjusted = min_p_aggregate([np.nan, 1.0], [[0.0, 0.0], [0.0, 2.0]])
    assert np.isnan(raw[0]) and np.isnan(adjusted[0])
    assert p == min_p_aggregate([1.0], [[0.0], [2.0]])[0]


def _sign_flip_draws(d: np.ndarray, rng, draws: int = 199) -> tuple[np.ndarray, np.ndarray]:
    """Statistics ``|sum_n s_n d_n|^2`` of several projections (columns) for the observation (s = 1) and for
    random signs: the randomisation null of order-2 groups, exchangeable when the d_n are symmetric."""
    signs = np.vstack([np.ones(d.shape[0]), rng.choice([-1.0, 1.0], size=(draws, d.shape[0]))])
    stats = (np.einsum("bn,nkd->bkd", signs, d) ** 2).sum(-1)  # (1 + draws, K)
    return stats[0], stats[1:]


@pytest.mark.parametrize("shift, low, high", [(0.0, 0.0, 0.1), (1.2, 0.9, 1.0)], ids=["null", "shifted"])
def test_aggregated_p_values_are_uniform_under_the_null_and_reject_a_shift(shift, low, high):
    """300 data sets of 20 'images' with 4 correlated statistics (one vector seen through 4 overlapping
    projections): under the null the aggregated p-values are uniform (KS distance < 0.1, not piled at 1) and
    reject at about alpha; with a shift (the negative control) they reject nearly always."""
    rng = np.random.default_rng(1)
    mix = rng.standard_normal((4, 6, 6))
    ps = []
    for _ in range(300):
        base = rng.standard_normal((20, 6)) + shift * np.array([1.0, 0, 0, 0, 0, 0])
        d = np.einsum("kij,nj->nki", mix, base)
        obs, null = _sign_flip_draws(d, rng)
        ps.append(min_p_aggregate(obs, null)[0])
    ps = np.sort(ps)
    rate = float(np.mean(ps <= 0.05))
    assert low <= rate <= high, rate
    if shift == 0.0:
        ks = np.max(np.abs(ps - np.arange(1, len(ps) + 1) / len(ps)))
        assert ks < 0.1, ks
        assert np.mean(ps > 0.9) < 0.2


def _sources(images) -> list[ImageSource]:
    return [ImageSource(f"a{i}", array=torch.from_numpy(a)[None]) for i, a in enumerate(images)]


def test_default_is_the_aggregated_test_and_one_kernel_options_select_single():
    assert Settings().kernels == "aggregate"
    images = _sources(anisotropic_images(4, 0, size=112))
    fast = dict(features=64, permutations=99, bootstrap=0)
    report = symmetry.measure_dataset(images, "flip", **fast)
    assert report.settings["kernels"] == "aggregate"
    assert {r["kernel"] for r in report.rows} == {c["name"] for c in AGGREGATE} | {"aggregate"}
    single = symmetry.measure_dataset(images, "flip", mesh=2.0, radius=8.0, **fast)
    assert single.settings["kernels"] == "single"
    assert symmetry.measure_dataset(images, "flip", preset="photos", **fast).settings["kernels"] == "single"
    with pytest.raises(UsageError, match="kernels single"):
        symmetry.measure_dataset(images, "flip", radius=8.0, kernels="aggregate", **fast)


def test_default_rejects_stretched_texture_and_not_its_symmetrised_copy():
    """Negative control and size on images whose texture is stretched along x: the default test rejects rot4 on
    the raw images (carried by a median-rule kernel, which sees orientation) and not on the same images made
    exactly dih4-invariant."""
    base = anisotropic_images(16, 3, size=112)
    fast = dict(features=64, permutations=199, bootstrap=0)
    raw = symmetry.measure_dataset(_sources(base), "rot4", **fast)
    verdict = raw.verdict("rot4")
    assert verdict["symmetric"] is False and verdict["kernel"].endswith("median")
    control = symmetry.measure_dataset(symmetrised(base, 11), "rot4", **fast)
    assert control.verdict("rot4")["symmetric"] is True
    agg = [r for r in control.rows if r["statistic"] == "aggregate"][0]
    per_kernel = [r["p_value"] for r in control.rows if r["statistic"] not in ("worst", "mean", "aggregate")]
    assert agg["p_value"] >= min(per_kernel)  # the combination's p is calibrated above the smallest single p


def test_median_rule_is_invariant_under_moving_single_windows():
    """The median-rule kernel is the same when each window is replaced by a quarter turn or flip of itself (what
    the randomisation null does to an image's windows), so the null is exact for the median rule too; the plain
    median over identity windows changes (the negative control)."""
    from symmetry.features import invariant_median
    from symmetry.transforms import disk_offsets, lattice_permutations

    offsets = disk_offsets(4.0, 1.0)
    gen = torch.Generator().manual_seed(0)
    stretch = torch.where(offsets[:, 0].abs() > 1, 2.0, 0.2).to(torch.float64)
    x = torch.randn(40, 2 * len(offsets), generator=gen, dtype=torch.float64) * stretch.repeat(2)
    perms = lattice_permutations(offsets, symmetry.get_group("dih4").matrices())
    moved = torch.stack(
        [row.view(2, -1)[:, perms[int(k)]].reshape(-1) for row, k in zip(x, torch.randint(8, (40,), generator=gen))]
    )
    assert invariant_median(moved, offsets) == pytest.approx(invariant_median(x, offsets), rel=1e-12)
    plain = lambda w: float(torch.cdist(w, w).pow(2)[~torch.eye(len(w), dtype=torch.bool)].median())  # noqa: E731
    assert abs(plain(moved) - plain(x)) > 1e-3 * plain(x)
