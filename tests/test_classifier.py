"""The classifier two-sample test (benchmarks/classifier.py): blind where crops cannot differ, decisive otherwise."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.classifier import classifier_test, make_cnn, move
from symmetry.groups import get_group


def test_cnn_has_five_weight_layers_and_one_logit():
    net = make_cnn()
    weighted = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weighted) == 5
    assert net(torch.zeros(3, 1, 64, 64)).shape == (3, 1)


def test_move_is_the_exact_pixel_permutation():
    crops = torch.rand(4, 1, 8, 8)
    elements = get_group("dih4").non_identity
    names = [e.name for e in elements]
    moved = move(crops, elements, np.array([names.index("flipud")] * 2 + [names.index("rot180")] * 2))
    assert torch.equal(moved[:2], torch.flip(crops[:2], dims=(-2,)))
    assert torch.equal(moved[2:], torch.rot90(crops[2:], 2, dims=(-2, -1)))


def test_flip_invariant_crops_are_not_rejected():
    """Images that vary only along y: every crop equals its left-right flip, so the label is invisible and the
    number of correct held-out images is a fair binomial draw."""
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(np.repeat(rng.random((72, 1)), 72, axis=1))[None] for _ in range(40)]
    result = classifier_test(images, "flip", steps=20, batch=16, test_crops=2)
    assert result["n"] == 20 and result["p_value"] > 0.01, result


def test_bright_top_dark_bottom_is_rejected_for_flipud():
    rng = np.random.default_rng(1)
    ramp = np.linspace(1.0, 0.0, 72)[:, None]
    images = [torch.from_numpy(ramp + 0.1 * rng.standard_normal((72, 72)))[None] for _ in range(40)]
    result = classifier_test(images, "flipud", steps=60, batch=16, test_crops=2)
    assert result["accuracy"] >= 0.9 and result["p_value"] < 1e-3, result
