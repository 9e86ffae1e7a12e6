"""Memory that must not grow with the number of images (issue 20; benchmarks/peak_rss.py measures the peak)."""

from __future__ import annotations

import torch

from symmetry import estimators
from symmetry.estimators import MMDStatistics
from symmetry.groups import get_group


def pending_high_water(group: str, images: int, features: int = 64) -> int:
    """The most images waiting in :class:`MMDStatistics`'s buffer (not yet folded into the null sums) while
    ``images`` images are added (few features and draws: a fast test; the rule depends on the order and features)."""
    grp = get_group(group)
    stats = MMDStatistics.for_group(grp, features, permutations=99, bootstrap=20, seed=0)
    gen = torch.Generator().manual_seed(0)
    most = 0
    for index in range(images):
        stats.add(index, torch.randn(len(grp), features, generator=gen, dtype=torch.float64), 128)
        most = max(most, len(stats._pending))
    return most


def test_the_images_waiting_to_be_folded_in_stop_growing():
    """Every group folds at most PENDING_IMAGES images at a time: the buffer of 25 images is that of 200."""
    for group in ("flip", "rot4", "dih4"):
        most = pending_high_water(group, 200)
        assert most == pending_high_water(group, 25) and most <= estimators.PENDING_IMAGES, group


def test_the_check_sees_a_buffer_that_grows(monkeypatch):
    """Negative control: without the image bound (the value bound alone), an order-2 group buffers 2048 images of 64
    features (256 of 512), so the buffer of 200 images is larger than that of 25 and the check above fails."""
    monkeypatch.setattr(estimators, "PENDING_IMAGES", 10**6)
    assert pending_high_water("flip", 200) > pending_high_water("flip", 25)
