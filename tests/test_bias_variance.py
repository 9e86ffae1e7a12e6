"""Bias-variance decomposition, G-invariant linear denoisers, the bias_variance experiment (theory.md, Section 4)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from analysis.bias_variance import (
    apply_filter,
    decompose,
    dominant_orientation,
    filter_image,
    filter_taps,
    fit_filter,
    group_average_operator,
    invariant_basis,
    normal_equations,
    patch_vectors,
    rotatable_basis,
    rotation_matrix,
    rotation_operator,
    tidy,
)
from experiments import bias_variance as bv
from experiments.runner import run_experiment
from symmetry.errors import UsageError

# ---- decomposition ----------------------------------------------------------------------


def test_decomposition_sums_to_risk_on_random_predictions():
    gen = torch.Generator().manual_seed(0)
    preds = torch.randn(7, 50, 3, 4, generator=gen) * 2 + 0.3
    targets = torch.randn(50, 3, 4, generator=gen)
    d = decompose(preds, targets)
    assert d["risk"] == pytest.approx(d["bias2"] + d["variance"], rel=1e-13, abs=0)
    direct = float(((preds.double() - targets.double()) ** 2).mean())
    assert d["risk"] == pytest.approx(direct, rel=1e-13)
    assert d["n_seeds"] == 7 and d["n_values"] == 50 * 12


def test_decomposition_of_hand_built_bias_and_variance():
    # f_s = y + b +- v: the seed average is y + b (bias^2 = b^2), the spread around it is v (variance = v^2)
    y = np.linspace(-1.0, 1.0, 11)
    b, v = 0.25, 0.5
    preds = np.stack([y + b + v, y + b - v, y + b + v, y + b - v])
    d = decompose(preds, y, noise=0.01)
    assert d["bias2"] == pytest.approx(b**2, abs=1e-15)
    assert d["variance"] == pytest.approx(v**2, abs=1e-15)
    assert d["risk"] == pytest.approx(b**2 + v**2, abs=1e-15)
    assert d["risk_seed_std"] == pytest.approx(2 * b * v, abs=1e-15)  # per-seed errors (b + v)^2 and (b - v)^2
    assert d["excess_bias2"] == pytest.approx(b**2 - 0.01, abs=1e-15)
    # no spread: all error is bias; unbiased spread: all error is variance
    assert decompose(np.stack([y + b] * 3), y)["variance"] == pytest.approx(0.0, abs=1e-30)
    assert decompose(np.stack([y + v, y - v]), y)["bias2"] == pytest.approx(0.0, abs=1e-30)


def test_decomposition_accepts_per_seed_targets_and_rejects_mismatches():
    y = torch.arange(6.0)
    preds = torch.stack([y + 1, y - 1])
    assert decompose(preds, torch.stack([y, y])) == decompose(preds, y)
    with pytest.raises(UsageError):
        decompose(preds, torch.stack([y, y + 1]))
    with pytest.raises(UsageError):
        decompose(preds, torch.arange(5.0))
    with pytest.raises(UsageError):
        decompose(y, y)


def test_tidy_has_one_row_per_component_and_drops_missing_noise():
    frame = pd.DataFrame(
        {
            "model": ["plain", "rot4"],
            "risk": [3.0, 2.0],
            "bias2": [1.0, 1.5],
            "variance": [2.0, 0.5],
            "noise": [0.5, None],
        }
    )
    long = tidy(frame, ["model"])
    assert len(long) == 7
    assert set(long["component"]) == {"risk", "bias2", "variance", "noise"}
    assert long.query("model == 'rot4' and component == 'variance'")["value"].item() == 0.5


# ---- G-invariant linear filters -----------------------------------------------------------


def _rot90(x: torch.Tensor, k: int = 1) -> torch.Tensor:
    return torch.rot90(x, k, dims=(-2, -1))


def test_group_averaged_filter_is_exactly_rot4_equivariant_on_the_grid():
    radius = 4
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(filter_taps(radius).shape[0], generator=gen, dtype=torch.float64)
    w_bar = group_average_operator(radius, "rot4") @ w  # Lemma 4.1 on the filter
    images = torch.randn(3, 25, 25, generator=gen, dtype=torch.float64)
    for k in (1, 2, 3):
        a = apply_filter(_rot90(images, k), w_bar, radius)
        b = _rot90(apply_filter(images, w_bar, radius), k)
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    # the same correlation as F.conv2d, and a generic (un-averaged) filter is not equivariant
    conv = F.conv2d(images[:, None], filter_image(w_bar, radius)[None, None])[:, 0]
    assert torch.allclose(conv, apply_filter(images, w_bar, radius), rtol=0, atol=1e-12)
    a = apply_filter(_rot90(images), w, radius)
    assert (a - _rot90(apply_filter(images, w, radius))).abs().max() > 0.1


def test_quarter_turn_operators_are_permutations_and_rot4_average_is_a_projection():
    radius = 4
    r90 = rotation_operator(radius, rotation_matrix(90))
    assert torch.equal(r90 @ r90.T, torch.eye(r90.shape[0], dtype=torch.float64))
    assert torch.equal(torch.linalg.matrix_power(r90, 4), torch.eye(r90.shape[0], dtype=torch.float64))
    # rotating the filter image by a quarter turn is torch.rot90 of it
    w = torch.arange(r90.shape[0], dtype=torch.float64)
    assert torch.equal(filter_image(r90 @ w, radius), _rot90(filter_image(w, radius)))
    p = group_average_operator(radius, "rot4")
    assert torch.allclose(p @ p, p, atol=1e-14) and torch.allclose(p, p.T, atol=1e-14)
    assert invariant_basis(radius, "rot4").shape[1] == round(float(torch.trace(p)))


def test_invariant_subspaces_nest_and_interpolated_rotations_nearly_fix_them():
    radius = 4
    b4, b8, b16 = (invariant_basis(radius, g) for g in ("rot4", "rot8", "rot16"))
    assert b4.shape[1] > b8.shape[1] >= b16.shape[1] >= 2
    # rot8-invariant filters are rot4-invariant (Pi_rot8 = Pi_rot4 (I + R_45) / 2): exactly inside
    assert torch.allclose(b4 @ (b4.T @ b8), b8, atol=1e-12)
    r45 = rotation_operator(radius, rotation_matrix(45))
    assert float((r45 @ b8 - b8).norm() / b8.norm()) < 0.2
    # the dropped rot4-invariant directions are those a 45-degree rotation changes a lot
    rest = b4 - b8 @ (b8.T @ b4)
    u = torch.linalg.svd(rest).U[:, : b4.shape[1] - b8.shape[1]]
    assert float((r45 @ u - u).norm() / u.norm()) > 0.5


def test_least_squares_fit_matches_a_direct_solve_and_is_g_invariant():
    radius = 2
    gen = torch.Generator().manual_seed(2)
    clean = torch.randn(4, 12, 12, generator=gen, dtype=torch.float64)
    noisy = clean + 0.3 * torch.randn(4, 12, 12, generator=gen, dtype=torch.float64)
    a, b, count = normal_equations(noisy, clean, radius, chunk=3)
    v = patch_vectors(noisy, radius).reshape(-1, a.shape[0])
    x = clean[:, radius:-radius, radius:-radius].reshape(-1)
    assert count == x.numel()
    w_direct = torch.linalg.lstsq(v, x[:, None]).solution[:, 0]
    w = fit_filter(a, b, invariant_basis(radius, None))
    assert torch.allclose(w, w_direct, atol=1e-10)
    w4 = fit_filter(a, b, invariant_basis(radius, "rot4"))
    assert torch.allclose(group_average_operator(radius, "rot4") @ w4, w4, atol=1e-12)
    assert float(((v @ w4 - x) ** 2).sum()) >= float(((v @ w - x) ** 2).sum())  # a constraint cannot fit better


def test_dominant_orientation_rotates_with_the_image_and_rotatable_filters_survive_rotation():
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(5, 20, 20, generator=gen, dtype=torch.float64).cumsum(-1)  # streaks along x
    theta = dominant_orientation(images)
    turned = dominant_orientation(_rot90(images))
    diff = (turned - theta - 90.0) % 180.0
    assert torch.all(torch.minimum(diff, 180.0 - diff) < 1e-9)
    basis = rotatable_basis(4, "rot2")
    for angle in (13.0, 45.0, 71.0):
        r = rotation_operator(4, rotation_matrix(angle))
        assert float(torch.linalg.svdvals(r @ basis).min()) > 0.3


# ---- the experiment ------------------------------------------------------------------------


def test_training_subsets_of_different_seeds_are_disjoint():
    seeds, block = range(8), 64
    subsets = {s: set(bv.seed_subset(s, 64, block, 8 * block).tolist()) for s in seeds}
    for s in seeds:
        for t in seeds:
            if s < t:
                assert not subsets[s] & subsets[t]
    assert set().union(*subsets.values()) == set(range(8 * block))
    assert set(bv.seed_subset(3, 4, block, 8 * block).tolist()) <= subsets[3]  # smaller sets are prefixes
    with pytest.raises(UsageError):
        bv.seed_subset(8, 1, block, 8 * block)
    with pytest.raises(UsageError):
        bv.seed_subset(0, 65, block, 8 * block)


def test_matched_model_is_the_largest_group_inside_the_data_symmetry():
    assert bv.matched_model("rot4", bv.LADDER) == "rot4"
    assert bv.matched_model("so2", bv.LADDER) == "rot16"
    assert bv.matched_model("rot2", bv.LADDER) == "rot2"
    assert bv.matched_model("rot2", ["plain", "rot4"]) == "plain"
    assert bv.matched_model("unknown", bv.LADDER) is None


SMALL = {
    "window": 16,
    "radius": 2,
    "sigma": 25.0,
    "signal_std": 0.25,
    "pool_windows": 48,
    "test_windows": 12,
    "data_seed": 0,
    "max_images": 4,
    "seeds": [0, 1, 2],
    "datasets": [
        {"name": "isotropic", "spec": "synthetic:isotropic,size=32", "symmetry": "so2"},
        {"name": "kfold4", "spec": "synthetic:kfold,k=4,mu=22.5,size=32", "symmetry": "rot4"},
        {"name": "rain100l", "spec": "rain100l", "symmetry": "unknown"},
    ],
    "linear": {"models": ["plain", "rot4", "rot8", "sa"], "n_train": [1, 4], "sa_group": "rot2", "angle_step": 2.0},
    "cnn": {
        "datasets": ["kfold4"],
        "models": ["plain", "rot4"],
        "n_train": [4],
        "seeds": [0, 1],
        "width": 1,
        "depth": 1,
        "kernel_size": 3,
        "steps": 2,
        "lr": 1e-3,
        "batch_size": 2,
        "crop": 12,
        "sa_group": "rot4",
        "plain_match": "rot4",
    },
}


def test_tiny_run_rows_decompose_exactly(tmp_path):
    messages = []
    frame = run_experiment(
        "bias_variance",
        out=tmp_path,
        config=SMALL,
        device="cpu",
        data_root=tmp_path,
        progress=False,
        log=messages.append,
    )
    assert any("skipped" in m and "rain100l" in m for m in messages)  # absent data is skipped, not an error
    assert set(frame["family"]) == {"linear", "cnn"}
    assert len(frame) == 2 * 4 * 2 + 2  # linear: 2 synthetic datasets x 4 models x 2 sizes; cnn: 2 models
    np.testing.assert_allclose(frame["bias2"] + frame["variance"], frame["risk"], rtol=1e-12, atol=0)
    assert (frame["variance"] > 0).all() and (frame["bias2"] > 0).all()
    lin = frame[frame["family"] == "linear"]
    np.testing.assert_allclose(lin["excess_bias2"], lin["bias2"] - lin["noise"], rtol=1e-12, atol=1e-18)
    assert frame[frame["family"] == "cnn"]["noise"].isna().all()  # unknown for networks: bias^2 includes it
    # more training data, less variance (same seeds, nested training sets)
    piv = lin.pivot_table(index=["dataset_name", "model"], columns="n_train", values="variance")
    assert (piv[4] < piv[1]).mean() >= 0.75
    # the stored CSV reloads to the same decomposition, and figures and verdict work on it
    stored = pd.read_csv(tmp_path / "bias_variance" / "quick.csv")
    np.testing.assert_allclose(stored["bias2"] + stored["variance"], stored["risk"], rtol=1e-12, atol=0)
    figs = bv.figures(frame, SMALL)
    assert set(figs) == {"linear-components", "linear-size", "cnn-components", "cnn-size"}
    text = bv.verdict(frame, SMALL)
    assert text.startswith("linear: ") and "| cnn: " in text and "kfold4 [rot4]" in text
    m = bv.minima(frame)
    assert len(m) == 2 * 2 + 1 and m["best_ladder"].isin(bv.LADDER).all()
    import matplotlib.pyplot as plt

    for fig in figs.values():
        plt.close(fig)
