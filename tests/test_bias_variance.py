"""Bias-variance decomposition, G-invariant linear denoisers, the bias_variance experiment (docs/theory.md, 2.4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from analysis import denoise_windows as dw
from analysis import matched_networks as mn
from analysis import risk_decisions as rd
from analysis.models import GroupAverage
from analysis.risk_report import readme_paragraph
from experiments import bias_variance as bv
from experiments.runner import run_experiment
from symmetry.errors import UsageError
from symmetry.groups import turn_matrix
from theory.bias_variance import decompose, ols_risk, paired_difference, tidy
from theory.linear_filters import (
    apply_filter,
    augmented_normal_equations,
    dominant_orientation,
    filter_image,
    filter_taps,
    fit_filter,
    group_average_operator,
    invariant_basis,
    normal_equations,
    patch_vectors,
    rotatable_basis,
    rotation_operator,
)

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
    assert d["bias2_corrected"] == pytest.approx(b**2 - v**2 / 3, abs=1e-15)  # bias2 - variance / (S - 1)
    assert d["excess_bias2"] == pytest.approx(b**2 - v**2 / 3 - 0.01, abs=1e-15)
    # no spread: all error is bias; unbiased spread: all error is variance
    assert decompose(np.stack([y + b] * 3), y)["variance"] == pytest.approx(0.0, abs=1e-30)
    assert decompose(np.stack([y + v, y - v]), y)["bias2"] == pytest.approx(0.0, abs=1e-30)


def test_corrected_bias_is_unbiased_over_seeds_and_the_seed_mean_bias_is_not():
    """``f_s = y + b + e_s`` with independent ``e_s ~ N(0, v)``: the seed mean's bias^2 is ``b^2 + v/S`` on average;
    ``bias2_corrected`` removes the ``v/S`` and ``excess_bias2`` is it minus the noise floor. Fails if the
    correction is missing (0.26 instead of 0.01) or uses the wrong power of S."""
    gen = torch.Generator().manual_seed(1)
    y = torch.randn(200_000, generator=gen, dtype=torch.float64)
    b, v, seeds = 0.1, 1.0, 4
    preds = y + b + math.sqrt(v) * torch.randn(seeds, y.numel(), generator=gen, dtype=torch.float64)
    d = decompose(preds, y, noise=0.002)
    assert d["bias2"] == pytest.approx(b**2 + v / seeds, abs=0.005)  # the seed mean still carries v/S
    assert d["bias2_corrected"] == pytest.approx(b**2, abs=0.002)
    assert d["excess_bias2"] == pytest.approx(b**2 - 0.002, abs=0.002)
    assert d["risk"] == pytest.approx(d["bias2"] + d["variance"], rel=1e-12)  # the exact identity is kept


def test_group_average_flops_are_counted_not_assumed():
    """FLOPs of the Lemma 4.1 average are measured: |G| passes of the network (plus the transforms' and the mean's
    few operations). A wrapper that claims the same cost factor but runs the network once is counted at 1x: the
    measurement can say "no"."""
    cell = {"depth": 1, "kernel_size": 3, "match_group": "rot4"}
    net = mn.network("plain", 3, cell)
    one = mn.forward_flops(net, 16, torch.device("cpu"))
    averaged = mn.forward_flops(GroupAverage(net, "rot4"), 16, torch.device("cpu"))
    assert 4 * one <= averaged < 5 * one  # four passes (plus the transforms and the mean), not five

    class OnePass(GroupAverage):
        def forward(self, x):
            return self.model(x)

    fake = OnePass(net, "rot4")
    assert fake.cost_factor == 4 and mn.forward_flops(fake, 16, torch.device("cpu")) == one


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
    r90 = rotation_operator(radius, turn_matrix(0.25))
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
    r45 = rotation_operator(radius, turn_matrix(0.125))
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
        r = rotation_operator(4, turn_matrix(angle / 360))
        assert float(torch.linalg.svdvals(r @ basis).min()) > 0.3


# ---- the experiment ------------------------------------------------------------------------


def test_training_subsets_of_different_seeds_are_disjoint():
    seeds, block = range(8), 64
    subsets = {s: set(dw.seed_subset(s, 64, block, 8 * block).tolist()) for s in seeds}
    for s in seeds:
        for t in seeds:
            if s < t:
                assert not subsets[s] & subsets[t]
    assert set().union(*subsets.values()) == set(range(8 * block))
    assert set(dw.seed_subset(3, 4, block, 8 * block).tolist()) <= subsets[3]  # smaller sets are prefixes
    with pytest.raises(UsageError):
        dw.seed_subset(8, 1, block, 8 * block)
    with pytest.raises(UsageError):
        dw.seed_subset(0, 65, block, 8 * block)


def test_matched_model_is_the_largest_group_inside_the_data_symmetry():
    assert rd.matched_model("rot4", rd.LADDER) == "rot4"
    assert rd.matched_model("so2", rd.LADDER) == "rot16"
    assert rd.matched_model("rot2", rd.LADDER) == "rot2"
    assert rd.matched_model("rot2", ["plain", "rot4"]) == "plain"
    assert rd.matched_model("unknown", rd.LADDER) is None


def test_paired_difference_is_the_student_t_interval_of_the_per_seed_differences():
    d = paired_difference([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])  # differences 1, 2, 3: mean 2, sd 1
    t975 = 0.95 / np.sqrt(2 * 0.975 * 0.025)  # t_{2, 0.975} in closed form (2 degrees of freedom)
    half = t975 / np.sqrt(3)
    assert d["mean"] == pytest.approx(2.0) and d["sd"] == pytest.approx(1.0)
    assert d["low"] == pytest.approx(2.0 - half, rel=1e-12) and d["high"] == pytest.approx(2.0 + half, rel=1e-12)
    # identical risks shifted by a constant: a zero-width interval at the shift (pairing removes the seed spread)
    a = np.array([1.0, 10.0, 100.0, 5.0])
    d = paired_difference(a + 0.5, a)
    assert d["low"] == pytest.approx(0.5) and d["high"] == pytest.approx(0.5)
    assert np.isnan(paired_difference([1.0], [0.0])["low"])
    with pytest.raises(UsageError):
        paired_difference([], [])


def test_ols_risk_is_the_gaussian_design_least_squares_risk():
    assert ols_risk(2.0, 10, 111) == pytest.approx(2.0 * (1 + 10 / 100))
    assert ols_risk(1.0, 0, 50) == pytest.approx(1.0)
    assert ols_risk(1.0, 10, 11) == np.inf
    # fewer parameters win at small N, the lower sigma^2 at large N (the bias-variance crossover)
    small, large = (1.10, 5), (1.00, 49)
    assert ols_risk(*small, 200) < ols_risk(*large, 200) and ols_risk(*small, 10**6) > ols_risk(*large, 10**6)


def test_rot4_augmentation_gives_the_rot4_constrained_least_squares_filter():
    radius = 3
    gen = torch.Generator().manual_seed(5)
    clean = torch.randn(3, 14, 14, generator=gen, dtype=torch.float64).cumsum(-1)  # anisotropic data
    noisy = clean + 0.5 * torch.randn(3, 14, 14, generator=gen, dtype=torch.float64)
    a, b, _ = normal_equations(noisy, clean, radius)
    constrained = fit_filter(a, b, invariant_basis(radius, "rot4"))
    a4, b4 = augmented_normal_equations(a, b, radius, "rot4")
    augmented = fit_filter(a4, b4, invariant_basis(radius, None))
    assert torch.allclose(augmented, constrained, atol=1e-10)
    # the same as stacking the four rotated training sets
    turned = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4) for x in (noisy, clean)]
    stack = normal_equations(torch.cat(turned[0::2]), torch.cat(turned[1::2]), radius)
    assert torch.allclose(stack[0] / 4, a4, atol=1e-9) and torch.allclose(stack[1] / 4, b4, atol=1e-9)
    # Lemma 4.1 after training (avg) is G-invariant too, but a different filter from the constrained fit
    averaged = group_average_operator(radius, "rot4") @ fit_filter(a, b, invariant_basis(radius, None))
    assert torch.allclose(group_average_operator(radius, "rot4") @ averaged, averaged, atol=1e-12)
    assert (averaged - constrained).abs().max() > 1e-4


def test_pick_group_walks_up_the_chain_until_the_first_rejection():
    assert rd.pick_group({"rot2": True, "rot4": True, "rot8": False}) == "rot4"
    assert rd.pick_group({"rot2": False, "rot4": True, "rot8": True}) == "plain"
    assert rd.pick_group({"rot2": True, "rot4": True, "rot8": True}) == "rot8"  # rot16 untested: not picked
    assert rd.pick_group({"rot2": True, "rot4": None, "rot8": True}) == "rot2"  # no verdict stops the walk


def test_stall_rule():
    assert not mn.stalled([1.0], 0.01)  # needs two checks
    assert mn.stalled([1.0, 1.0], 0.01)
    assert not mn.stalled([2.0, 1.0], 0.01)
    assert mn.stalled([1.0, 0.995], 0.01)
    assert mn.stalled([1.0, 1.5], 0.01)  # a rise is a stall too


def _tiny_cnn_cell(**changes) -> dict:
    cell = {"model": "plain", "radius": 2, "crop": 8, "window": 8, "batch_size": 2, "depth": 1, "kernel_size": 3}
    cell.update(match_group="rot4", match_width=1, check_every=3, max_steps=40, lr=1e-3, lr_decay=0.5, decays=2)
    cell.update(changes)
    return cell


def test_training_stops_by_the_convergence_rule():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 8, 8, generator=gen, dtype=torch.float64)
    noisy = clean + 0.1 * torch.randn(4, 8, 8, generator=gen, dtype=torch.float64)
    # every check a stall (tol huge): one check per learning rate, decays + 1 of them, then converged
    _, steps, converged = mn.train_network(_tiny_cnn_cell(tol=10.0), 0, noisy, clean, torch.device("cpu"))
    assert converged and steps == 3 * 3
    # never a stall (a fall of more than twice the loss is impossible): the cap stops it, not converged
    _, steps, converged = mn.train_network(_tiny_cnn_cell(tol=-1.0), 0, noisy, clean, torch.device("cpu"))
    assert not converged and steps == 40


def test_shadow_is_a_downward_copy_of_the_positive_part():
    image = torch.zeros(1, 9, 9, dtype=torch.float64)
    image[0, 2, 4], image[0, 5, 1] = 1.0, -1.0
    out = dw.shadow(image)
    expected = torch.zeros_like(image)
    expected[0, 2, 4], expected[0, 2 + dw.SHADOW_SHIFT, 4] = 1.0, dw.SHADOW_GAIN
    assert torch.equal(out, expected)
    # not half-turn equivariant: the shadow of a turned image lies above, not below
    turned = torch.rot90(image, 2, dims=(-2, -1))
    assert not torch.equal(dw.shadow(turned), torch.rot90(out, 2, dims=(-2, -1)))


def test_cnn_widths_match_the_parameter_count():
    from analysis.models import count_parameters

    cell = {"match_group": "rot8", "match_width": 2, "depth": 1, "kernel_size": 5}
    target = count_parameters(mn.network("rot8", 2, cell))
    for model in ("plain", "rot2", "rot4", "rot8", "aug:rot4"):
        net = mn.build_network({**cell, "model": model})
        assert abs(count_parameters(net) - target) <= 0.15 * target, model
    assert mn.forward_flops(mn.build_network({**cell, "model": "plain"}), 16, torch.device("cpu")) > 0


def test_decisions_report_ties_and_resolved_wins_from_seed_risks():
    def row(model, risks):
        return {
            "family": "linear",
            "dataset_name": "d",
            "data_symmetry": "rot4",
            "n_train": 4,
            "model": model,
            "kappa": np.nan,
            "seeds": "[0, 1, 2, 3]",
            "seed_risks": str(risks),
            "risk": float(np.mean(risks)),
        }

    frame = pd.DataFrame(
        [
            row("rot4", [1.0, 2.0, 3.0, 4.0]),
            row("rot8", [1.1, 2.1, 3.1, 4.2]),  # worse on every seed: resolved
            row("plain", [1.5, 1.6, 3.6, 3.5]),  # worse on average, not on every seed: tie
            row("aug:rot4", [1.0, 2.0, 3.0, 4.0]),
        ]
    )
    d = rd.decisions(frame).iloc[0]
    assert d["best"] == "rot4" and d["matched"] == "rot4" and bool(d["matches"])
    assert d["runner_up"] == "plain" and d["diff"] == pytest.approx(0.05)  # the smallest mean difference
    assert d["tied"] == "plain" and not d["resolved"]  # rot8 (+0.125 on every seed but one +0.2) is resolved
    assert d["low"] < 0 < d["high"]
    assert json.loads(d["arms"])["aug:rot4"] == [0.0, 0.0, 0.0]


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
    "linear": {
        "models": ["plain", "rot4", "rot8", "sa", "aug:rot4", "avg:rot4"],
        "n_train": [1, 4],
        "sa_group": "rot2",
        "angle_step": 2.0,
    },
    "sweep": {
        "name": "kf",
        "spec": "synthetic:kfold,k=4,mu=22.5,size=32",
        "symmetry": "rot4",
        "kappas": [0, 4],
        "n_train": [1, 4],
        "models": ["plain", "rot4", "rot8"],
    },
    "measure": {
        "groups": "rot2,rot4",
        "images": 3,
        "mesh": 1.0,
        "radius_px": 4.0,
        "windows": 8,
        "features": 32,
        "permutations": 39,
        "bootstrap": 10,
        "alpha": 0.05,
    },
    "cnn": {
        "datasets": ["kfold4"],
        "models": ["plain", "rot4"],
        "average": ["rot4"],
        "n_train": [4],
        "seeds": [0, 1],
        "match_group": "rot4",
        "match_width": 1,
        "depth": 1,
        "kernel_size": 3,
        "max_steps": 4,
        "check_every": 2,
        "tol": 0.5,
        "lr": 1e-3,
        "lr_decay": 0.5,
        "decays": 1,
        "batch_size": 2,
        "crop": 12,
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
    assert set(frame["family"]) == {"linear", "cnn", "measure"}
    models = frame[frame["family"] != "measure"]
    # linear: 2 datasets x 6 models x 2 sizes + sweep 2 kappas x 3 models x 2 sizes; cnn: plain, avg:rot4, rot4
    assert len(models) == 2 * 6 * 2 + 2 * 3 * 2 + 3
    assert set(models.loc[models["family"] == "cnn", "model"]) == {"plain", "avg:rot4", "rot4"}
    np.testing.assert_allclose(models["bias2"] + models["variance"], models["risk"], rtol=1e-12, atol=0)
    assert (models["variance"] > 0).all() and (models["bias2"] > 0).all()
    per_seed = models["seed_risks"].map(lambda t: float(np.mean(json.loads(t))))
    np.testing.assert_allclose(per_seed, models["risk"], rtol=1e-12)  # the paired intervals use these
    lin = models[models["family"] == "linear"]
    # augmentation by rot4 is the rot4-constrained fit (exact for quarter turns)
    piv = lin[lin["kappa"].isna()].pivot_table(index=["dataset_name", "n_train"], columns="model", values="risk")
    np.testing.assert_allclose(piv["aug:rot4"], piv["rot4"], rtol=1e-9)
    cnn = models[models["family"] == "cnn"]
    assert cnn["noise"].isna().all() and (cnn["flops"] > 0).all()
    avg = cnn.set_index("model")
    assert 4 <= avg.loc["avg:rot4", "flops"] / avg.loc["plain", "flops"] < 5  # counted: |G| = 4 forward passes
    meas = frame[frame["family"] == "measure"]
    assert set(meas["group"]) == {"rot2", "rot4"} and meas["picked"].isin(rd.LADDER).all()
    assert len(meas) == 2 * (2 + 2)  # 2 datasets + 2 sweep datasets (rain100l skipped), 2 groups each
    # the stored CSV reloads to the same decomposition, and figures and verdict work on it
    stored = pd.read_csv(tmp_path / "bias_variance" / "quick.csv")
    stored = stored[stored["family"] != "measure"]
    np.testing.assert_allclose(stored["bias2"] + stored["variance"], stored["risk"], rtol=1e-12, atol=0)
    figs = bv.figures(frame, SMALL)
    assert {"linear-components", "linear-size", "cnn-components", "phase", "decisions"} <= set(figs)
    text = bv.verdict(frame, SMALL)
    assert text.startswith("linear: ") and "\ncnn: " in text and "kfold4 [rot4]" in text
    assert "eps sweep" in text and "measured eps -> group" in text
    para = readme_paragraph(frame, SMALL)
    assert "*linear*" in para and "*cnn*" in para and "*Phase diagram*" in para and "% [" in para
    d = rd.decisions(frame)
    assert d["best"].isin(rd.LADDER).all() and (d["low"] <= d["diff"]).all() and (d["diff"] <= d["high"]).all()
    ph = rd.phase(frame)
    assert len(ph) == 2 * 2 and ph["predicted"].isin(rd.LADDER).all()
    import matplotlib.pyplot as plt

    for fig in figs.values():
        plt.close(fig)
