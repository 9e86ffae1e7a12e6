"""The ``sa_alignment`` experiment (experiments/sa_alignment.py) on a tiny configuration."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from experiments import sa_alignment
from experiments.runner import load_config, run_experiment
from symmetry.errors import UsageError

COLUMNS = [
    "image",
    "pred_theta0",
    "pred_cx",
    "pred_cy",
    "pred_log_ratio",
    "align_theta0",
    "align_cx",
    "align_cy",
    "align_log_ratio",
    "self_symmetry_error",
    "aligned_error",
    "truth_theta0",
    "truth_log_ratio",
    "truth_error",
    "mmd_theta0",
    "mmd_log_ratio",
    "sa_dtheta0",
    "sa_dcx",
    "sa_dcy",
    "sa_dlog_ratio",
    "sa_steps_run",
    "sa_last_change_deg",
    "sa_last_change_scale",
    "psnr_input",
    "psnr_equivariant",
    "psnr_tl",
    "psnr_sa",
    "psnr_sa_global",
    "psnr_truth",
    "psnr_truth_scaled",
    "psnr_learned_mean",
]


def small_config(**datasets) -> dict:
    cfg = load_config("sa_alignment", "quick")
    cfg.update(
        steps=8,
        sa_max_steps=6,
        sa_check_every=2,
        sa_patience=1,
        probe_images=2,
        hyper_width=8,
        seeds=[0, 1],
        patch=32,
        mmd_images=2,
        mmd_windows=16,
        angles=4,
        scales=3,
        refine=1,
        radius=3.0,
    )
    cfg.update(datasets=list(datasets) or ["synthetic"])
    cfg["synthetic"] = dict(
        cfg["synthetic"],
        train_images=2,
        test_images=4,
        spec="synthetic:deformed,size=40,atoms=150,long=2.5,short=0.7",
        controls=["truth", "truth_scaled", "learned_mean"],
    )
    cfg["rain100l"] = dict(cfg["rain100l"], train_images=2, test_images=3, crop=40)
    return cfg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    cfg = small_config()
    out = tmp_path_factory.mktemp("results")
    return cfg, run_experiment("sa_alignment", out=out, config=cfg, device="cpu", progress=False, log=lambda s: None)


def test_one_finite_row_per_test_image(tiny):
    cfg, frame = tiny
    assert len(frame) == cfg["synthetic"]["test_images"] * len(cfg["seeds"])
    assert not frame.duplicated(["image", "seed"]).any()
    assert set(COLUMNS) <= set(frame.columns)
    always = [c for c in COLUMNS if c != "image" and not c.startswith("mmd_")]
    assert np.isfinite(frame[always].to_numpy(float)).all()
    assert frame["mmd_theta0"].notna().sum() == cfg["mmd_images"] * len(cfg["seeds"])
    np.testing.assert_allclose(frame["pred_log_ratio"], np.log(frame["pred_cx"] / frame["pred_cy"]))
    assert (frame["pred_theta0"].abs() < math.pi / 4).all()  # the hypernetwork's range: (-pi/N, pi/N)
    assert ((frame["align_theta0"] >= 0) & (frame["align_theta0"] < math.pi / 2)).all()


def test_figures_and_verdict(tiny):
    cfg, frame = tiny
    figs = sa_alignment.figures(frame, cfg)
    assert set(figs) == {"angles", "scales", "controls"}
    text = sa_alignment.verdict(frame, cfg)
    assert "estimator vs truth (synthetic)" in text and f"{cfg['steps']} + S steps" in text
    assert "convergence rule" in text and "spread over test images (synthetic)" in text
    assert "true D_n vs D = I" in text and "sa (fine-tuned from tl) vs tl (synthetic)" in text
    assert text.startswith(("per-sample adaptation (sa from tl)", "sa from tl beats tl"))  # adaptation_verdict
    table = sa_alignment.control_table(frame)
    assert list(table.columns) == ["input", *sa_alignment.MODELS, *sa_alignment.CONTROLS]


def test_sa_starts_as_the_tl_it_is_fine_tuned_from():
    """The authors' recipe inside the experiment: ``train_model(kind="sa", start=tl_state)`` at learning rate 0
    computes exactly the trained ``tl`` (its zero last layer adds nothing), and so does ``kind="tl"`` continued
    from it; a fresh network from the same seed does not (the ``tl`` moved in training), so ignoring ``start``
    fails here. One real step then moves the hypernetwork's zero last layer."""
    cfg = sa_alignment.cells(small_config())[0]
    images = [torch.rand(1, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    cpu = torch.device("cpu")
    tl, _ = sa_alignment.train_model(cfg, images, cpu, kind="tl", steps=3)
    state = {k: v.clone() for k, v in tl.state_dict().items()}
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(9))
    frozen = dict(steps=1, lr=0.0, schedule="constant", start=state, first_step=3)
    sa = sa_alignment.train_model(cfg, images, cpu, kind="sa", **frozen)[0]
    continued = sa_alignment.train_model(cfg, images, cpu, kind="tl", **frozen)[0]
    fresh = sa_alignment.train_model(cfg, images, cpu, kind="tl", steps=1, lr=0.0, schedule="constant")[0]
    with torch.no_grad():
        reference = tl(x)
        assert (sa(x) - reference).abs().max() < 1e-6
        assert (continued(x) - reference).abs().max() < 1e-6
        assert torch.equal(sa.layer_transforms(), tl.layer_transforms())
        assert (fresh(x) - reference).abs().max() > 1e-4  # what an ignored start would give
    moved = sa_alignment.train_model(cfg, images, cpu, kind="sa", steps=1, start=state, first_step=3)[0]
    assert moved.hyper.out.weight.abs().sum() > 0


def test_fine_tuning_stops_when_the_offsets_stop_changing():
    """The rule of fine_tune_sa: a tolerance no change can meet runs to the cap; a loose one stops at the first
    checks that pass; changes are measured on the fixed probe crops."""
    cfg = sa_alignment.cells(small_config())[0]
    images = [torch.rand(1, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    cpu = torch.device("cpu")
    tl, _ = sa_alignment.train_model(cfg, images, cpu, kind="tl", steps=2)
    state = tl.state_dict()
    strict = dict(cfg, sa_tol_deg=0.0, sa_tol_scale=0.0, sa_max_steps=6, sa_check_every=2, sa_patience=1)
    _, losses, trace = sa_alignment.fine_tune_sa(strict, images, cpu, state)
    assert len(losses) == 6 and not trace.attrs["converged"] and trace.attrs["steps"] == 6
    assert list(trace["step"]) == [4, 6] and (trace["change_deg"] > 0).all()
    loose = dict(strict, sa_tol_deg=1e9, sa_tol_scale=1e9, sa_patience=2, sa_max_steps=40)
    _, losses, trace = sa_alignment.fine_tune_sa(loose, images, cpu, state)
    assert trace.attrs["converged"] and trace.attrs["steps"] == 6 == len(losses)  # checks at 4 and 6 pass
    before = torch.zeros(2, 3, dtype=torch.float64)
    after = torch.tensor([[math.radians(0.3), 0.0, 0.02], [0.0, -0.01, 0.0]], dtype=torch.float64)
    assert sa_alignment.offset_change(before, after) == (pytest.approx(0.3), pytest.approx(0.02))


def test_paired_differences_and_sentences():
    seeds = np.repeat([0, 1, 2], 2)
    base = np.array([20.0, 21.0, 20.5, 21.5, 19.0, 20.0])
    frame = pd.DataFrame(
        {
            "dataset": "synthetic",
            "seed": seeds,
            "psnr_tl": base,
            "psnr_sa": base + np.array([0.19, 0.19, 0.2, 0.2, 0.21, 0.21]),
        }
    )
    row = sa_alignment.paired_differences(frame).iloc[0].to_dict()
    assert (row["a"], row["b"], row["n_seeds"]) == ("sa", "tl", 3)
    assert row["mean_db"] == pytest.approx(0.2)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    assert (row["lo_db"], row["hi_db"]) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))
    assert sa_alignment.difference_sentence(row).endswith("sa (fine-tuned from tl) is better")
    diffs = sa_alignment.paired_differences(frame.assign(psnr_sa=base + np.array([0.1, 0.1, -0.1, -0.1, 0.0, 0.0])))
    assert "adds nothing detectable beyond TL on synthetic" in sa_alignment.adaptation_verdict(diffs)
    # a gain whose offsets are the same for every image is a shared offset, not adaptation
    better = sa_alignment.paired_differences(frame)
    constant = frame.assign(sa_dtheta0=0.1)
    varied = frame.assign(sa_dtheta0=np.tile([0.0, 0.5], 3))
    assert "not per-sample adaptation" in sa_alignment.adaptation_verdict(better, constant)
    assert sa_alignment.offset_spread_deg(varied)["synthetic"] == pytest.approx(math.degrees(0.25))
    assert sa_alignment.adaptation_verdict(better, varied).startswith("per-sample adaptation (sa from tl) adds PSNR")
    one = sa_alignment.paired_differences(frame[frame["seed"] == 0])
    assert "no verdict" in sa_alignment.adaptation_verdict(one)


def test_control_transforms():
    pred = np.array([[0.2, 0.5, 0.8], [0.4, 0.5, 0.8]])  # learned isotropic scale sqrt(0.4) on average
    train = [{"theta": 0.1, "cx": 2.0, "cy": 0.5}]
    test = [{"theta": 0.3, "cx": 1.25, "cy": 0.8}, {"theta": 0.0, "cx": 1.0, "cy": 1.0}]
    np.testing.assert_allclose(sa_alignment.control_transforms("learned_mean", pred, train, test)[0], [[0.3, 0.5, 0.8]])
    truth = sa_alignment.control_transforms("truth", pred, train, test)
    np.testing.assert_array_equal(truth[0], [[0.1, 2.0, 0.5]])
    np.testing.assert_allclose(
        sa_alignment.control_transforms("truth_scaled", pred, train, test)[1],
        [[0.3, 1.25 * 0.4**0.5, 0.8 * 0.4**0.5], [0, 0.4**0.5, 0.4**0.5]],
    )
    assert sa_alignment.control_transforms("truth", pred, [{}], [{}, {}]) is None  # photographs: no truth


def test_unknown_control_is_a_usage_error():
    cfg = small_config()
    cfg["synthetic"] = dict(cfg["synthetic"], controls=["oracle"])
    with pytest.raises(UsageError, match="unknown sa_alignment control"):
        sa_alignment.cells(cfg)


def test_compare_identities():
    rng = np.random.default_rng(0)
    theta, ratio = rng.uniform(0, math.pi, 12), rng.uniform(-0.6, 0.6, 12)
    frame = pd.DataFrame(
        {
            "truth_theta0": theta,
            "truth_log_ratio": ratio,
            "align_theta0": theta + math.pi / 2,  # the same stretch: a quarter turn with the axes swapped
            "align_log_ratio": -ratio,
            "pred_theta0": np.full(12, 0.3),  # a constant prediction
            "pred_log_ratio": np.full(12, 0.1),
        }
    )
    same = sa_alignment.compare(frame, "align", "truth")
    assert same["circular_r"] == pytest.approx(1.0)
    assert same["log_ratio_r"] == pytest.approx(1.0)
    assert same["median_abs_deg"] == pytest.approx(0.0, abs=1e-9)
    const = sa_alignment.compare(frame, "pred", "truth")
    assert const["spread_deg"] == pytest.approx(0.0, abs=1e-6)
    assert not sa_alignment.learned(const) and sa_alignment.learned(same)


def test_rain100l_cell_is_skipped_without_data(tmp_path):
    cfg = small_config(rain100l=True)
    frame = run_experiment(
        "sa_alignment", out=tmp_path, config=cfg, data_root=tmp_path / "absent", progress=False, log=lambda s: None
    )
    assert frame.empty
