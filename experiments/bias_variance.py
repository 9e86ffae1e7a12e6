"""``bias_variance``: risk of denoisers with more or less equivariance than the data's symmetry (docs/theory.md, 2.4).

Section 4 predicts that forcing more equivariance than the data has adds bias (growing with eps), that allowing less
leaves more variance (worst with little data), and that the risk is smallest when the model's equivariance matches the
data's symmetry. Here the data's symmetry is known by construction (``symmetry.synthetic``: isotropic = every rotation,
kfold k=4 = quarter turns only, vonmises = half turns only, since the atoms are symmetric under a half turn) or unknown
(photographs: scikit-image's and Rain100L's clean images).

This module keeps the cells, ``run_cell``, the figures and the verdict; the method is in :mod:`theory.bias_variance`,
:mod:`theory.linear_filters`, :mod:`analysis.denoise_windows`, :mod:`analysis.linear_denoisers`,
:mod:`analysis.matched_networks`, :mod:`analysis.risk_decisions` and :mod:`analysis.risk_report`.

Every dataset is cut into non-overlapping ``window x window`` samples of clean gray images; the training pool and the
test set come from different images. Seed ``s`` trains on the samples ``[s * block, s * block + n_train)`` of the
shuffled pool (``block = max(n_train)``), so the training sets of different seeds are disjoint, with their own fixed
Gaussian noise (``sigma`` in 0-255 units; synthetic images are scaled to a pixel standard deviation of ``signal_std``,
that of photographs in [0, 1]). The test set (fixed noise) is the same for every model and seed, and every model is
scored on the same pixels: the window minus a ``radius`` margin. :func:`theory.bias_variance.decompose` splits the
seed-averaged test error into ``bias2`` and ``variance``.

Two families of models:

- ``linear``: a correlation filter on a disk of taps fitted in closed form by least squares, constrained to be
  G-invariant by group averaging (Lemma 4.1) for G in plain, rot2, rot4, rot8, rot16, and ``sa``: a G-invariant filter
  rotated per sample by the sample's structure-tensor orientation (the linear analogue of SA-Conv's per-sample ``D_w``).
  Its ``noise`` is the test error of the plain filter fitted on the whole pool (the floor of the linear class; the
  Bayes error of these non-Gaussian images is lower), ``oracle_risk`` the test error of the model's own filter fitted
  on the whole pool (its risk with unlimited data, i.e. its approximation bias).
- ``cnn``: the analysis networks (:func:`analysis.models.build_model`: plain, equivariant rotN, sa) at tiny widths
  matched in parameter count (forward FLOPs counted), trained on the same training sets until an explicit convergence
  rule holds (:func:`analysis.matched_networks.train_network`: the full training loss stalls at the final learning
  rate) or ``max_steps``; seeds
  differ in data and initialisation, so their variance includes the optimiser's. Their irreducible error is
  unknown: ``bias2`` includes it.

The eps sweep's phase diagram compares the best linear group with the closed form ``argmin_G sigma_G^2 (1 + p_G /
(N_eff - p_G - 1))``, ``N_eff`` calibrated on the plain filter (overlapping patches are not independent rows), on the
cells the seeds resolve after Holm's adjustment; a sweep dataset equal to a main one (``kfold4-kappa16`` is
``kfold4``) is computed once.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.ticker import NullFormatter

from analysis.denoise_windows import DATA_KEYS, clean_images, pools, seed_subset, sweep_aliases, sweep_datasets
from analysis.linear_denoisers import apply_linear, arm, fit_linear, linear_basis, oracle_risk, prepared
from analysis.matched_networks import forward_flops, predict, train_network
from analysis.models import GroupAverage, count_parameters
from analysis.risk_decisions import (
    LADDER,
    decisions,
    linear_floor,
    matched_model,
    model_order,
    phase,
    pick_group,
    predictions,
    summary,
)
from analysis.risk_report import interval, phase_sentence, readme_paragraph, training_text
from experiments.runner import Context, SkipCell
from experiments.style import PALETTE, subplots
from symmetry.errors import UsageError
from symmetry.measurement import measure_dataset
from symmetry.sources import ImageSource
from theory.bias_variance import decompose
from theory.linear_filters import interior, patch_vectors


def _dataset(ds: dict) -> dict:
    return {"name": ds["name"], "spec": ds["spec"], "symmetry": ds["symmetry"], "kappa": ds.get("kappa")}


def cells(config: dict) -> list[dict]:
    """One cell per (family, dataset, model, training-set size) -- each fits every seed -- plus one ``measure``
    cell per dataset (its measured symmetry, item 5)."""
    data = {k: config[k] for k in DATA_KEYS}
    seeds = list(config["seeds"])
    lin = config["linear"]
    block = max([*lin["n_train"], *config.get("sweep", {}).get("n_train", [])])
    out = []

    def linear(ds: dict, models, sizes) -> None:
        for model in models:
            for n in sizes:
                cell = {"family": "linear", "dataset": _dataset(ds), "model": model, "n_train": n, "block": block}
                cell.update(data, seeds=seeds, sa_group=lin["sa_group"], angle_step=lin["angle_step"])
                out.append(cell)

    for ds in config["datasets"]:
        linear(ds, lin["models"], lin["n_train"])
    sweep, aliases = config.get("sweep"), sweep_aliases(config)
    for ds in sweep_datasets(config):
        if ds["name"] not in aliases:
            linear(ds, sweep["models"], sweep["n_train"])
    cnn = config.get("cnn")
    if cnn:
        keys = ("match_group", "match_width", "depth", "kernel_size", "max_steps", "check_every", "tol", "lr")
        keys += ("lr_decay", "decays")
        for ds in config["datasets"]:
            if ds["name"] not in cnn["datasets"]:
                continue
            for model in cnn["models"]:
                for n in cnn["n_train"]:
                    cell = {"family": "cnn", "dataset": _dataset(ds), "model": model, "n_train": n}
                    cell.update(data, block=block, seeds=list(cnn["seeds"]), batch_size=cnn["batch_size"])
                    cell.update({k: cnn[k] for k in keys}, crop=cnn["crop"], average=list(cnn["average"]))
                    out.append(cell)
    meas = config.get("measure")
    if meas:
        for ds in [*config["datasets"], *(d for d in sweep_datasets(config) if d["name"] not in aliases)]:
            cell = {"family": "measure", "dataset": _dataset(ds), "data_seed": config["data_seed"]}
            cell.update({k: meas[k] for k in sorted(meas)})
            out.append(cell)
    return out


def _data_key(cell: dict) -> tuple:
    return tuple((k, cell[k]) for k in DATA_KEYS)


def _cell_root(cell: dict, ctx: Context) -> str | None:
    """The data root for the cell's dataset; :class:`SkipCell` when a real dataset is absent."""
    if cell["dataset"]["spec"] == "rain100l" and not ctx.data_available("rain100l"):
        raise SkipCell(f"rain100l not found under {ctx.data_root}; pass --data-root")
    return str(ctx.data_root) if ctx.data_root else None


def load_pools(cell: dict, ctx: Context) -> dict[str, torch.Tensor]:
    """The cell's training pool and test set (clean and noisy windows)."""
    return pools(cell["dataset"]["spec"], _data_key(cell), _cell_root(cell, ctx))


def _prepare(cell: dict, ctx: Context) -> dict[str, torch.Tensor]:
    return prepared(cell["dataset"]["spec"], _data_key(cell), _cell_root(cell, ctx))


def run_linear(cell: dict, ctx: Context) -> dict:
    """Fit the linear model on every seed's training set; predictions ``(S, N, Q)`` on the test set."""

    prep = _prepare(cell, ctx)
    r = cell["radius"]
    basis = linear_basis(cell["model"], r, cell["sa_group"], cell["angle_step"])
    weights, train_risks = [], []
    for seed in cell["seeds"]:
        idx = torch.from_numpy(seed_subset(seed, cell["n_train"], cell["block"], prep["train_clean"].shape[0]))
        w = fit_linear(cell, prep, idx, basis)
        if cell["model"] == "sa":
            noisy = prep["train_noisy"][idx]
            patches = patch_vectors(noisy, r).reshape(len(idx), -1, basis.shape[0])
            fitted = apply_linear(cell, w[None], patches, prep["train_angles"][idx])[0]
            target = interior(prep["train_clean"][idx], r).reshape(len(idx), -1)
            train_risks.append(float((fitted - target).square().mean()))
        else:  # ||V w - x||^2 = w^T A w - 2 w^T b + x^T x, summed over the seed's windows
            a, b = prep["train_gram"][idx].sum(0), prep["train_cross"][idx].sum(0)
            sse = w @ a @ w - 2 * w @ b + prep["train_square"][idx].sum()
            train_risks.append(float(sse) / (len(idx) * (cell["window"] - 2 * r) ** 2))
        weights.append(w)
    preds = apply_linear(cell, torch.stack(weights), prep["test_patches"], prep["test_angles"])
    oracle = (cell["dataset"]["spec"], _data_key(cell), _cell_root(cell, ctx))
    return {
        "preds": preds,
        "targets": prep["test_target"],
        "train_risks": train_risks,
        "noise": oracle_risk(*oracle, "plain", cell["sa_group"], cell["angle_step"]),
        "oracle_risk": oracle_risk(*oracle, cell["model"], cell["sa_group"], cell["angle_step"]),
        "params": int(linear_basis(arm(cell["model"])[1] or cell["model"], r, cell["sa_group"], 1.0).shape[1]),
        "pools": prep,
    }


def run_cnn(cell: dict, ctx: Context) -> dict:
    """Train the cell's network on every seed; for ``plain`` also the Lemma 4.1 averages ``avg:G`` of the same
    trained networks (:class:`analysis.models.GroupAverage`) for every G in ``average``."""

    pools = load_pools(cell, ctx)
    r = cell["radius"]
    averaged = cell["average"] if cell["model"] == "plain" else []
    preds: dict[str, list] = {cell["model"]: [], **{f"avg:{g}": [] for g in averaged}}
    train_risks: dict[str, list] = {k: [] for k in preds}
    steps, converged = [], []
    net = None
    for seed in cell["seeds"]:
        idx = torch.from_numpy(seed_subset(seed, cell["n_train"], cell["block"], pools["train_clean"].shape[0]))
        noisy, clean = pools["train_noisy"][idx], pools["train_clean"][idx]
        net, taken, done = train_network(cell, seed, noisy, clean, ctx.device)
        steps.append(taken)
        converged.append(done)
        models = {cell["model"]: net, **{f"avg:{g}": GroupAverage(net, g) for g in averaged}}
        for name, m in models.items():
            train_risks[name].append(float((predict(m, noisy, r, ctx.device) - interior(clean, r)).square().mean()))
            preds[name].append(predict(m, pools["test_noisy"], r, ctx.device))
    flops = {name: forward_flops(m, cell["window"], ctx.device) for name, m in models.items()}  # counted, not assumed
    return {
        name: {
            "preds": torch.stack(preds[name]),
            "targets": interior(pools["test_clean"], r),
            "train_risks": train_risks[name],
            "noise": None,
            "oracle_risk": math.nan,
            "params": count_parameters(net),
            "flops": flops[name],
            "steps": float(np.mean(steps)),
            "converged": float(np.mean(converged)),
            "pools": pools,
        }
        for name in preds
    }


def _row(cell: dict, ctx: Context, model: str, out: dict) -> dict:

    pools, r = out["pools"], cell["radius"]
    target = interior(pools["test_clean"], r)
    parts = decompose(out["preds"], out["targets"], noise=out["noise"])
    per_seed = (out["preds"].double() - out["targets"].double()).square().flatten(1).mean(1)
    train_risk = float(np.mean(out["train_risks"]))
    return {
        "model": model,
        "dataset_name": cell["dataset"]["name"],
        "data_symmetry": cell["dataset"]["symmetry"],
        "kappa": cell["dataset"].get("kappa"),
        "risk": parts["risk"],
        "bias2": parts["bias2"],
        "bias2_corrected": parts["bias2_corrected"],
        "variance": parts["variance"],
        "noise": parts.get("noise", math.nan),
        "excess_bias2": parts.get("excess_bias2", math.nan),
        "train_risk": train_risk,
        "generalization_gap": parts["risk"] - train_risk,
        "oracle_risk": out["oracle_risk"],
        "input_risk": float((interior(pools["test_noisy"], r) - target).square().mean()),
        "risk_seed_std": parts["risk_seed_std"],
        "seed_risks": json.dumps([float(v) for v in per_seed]),
        "params": out["params"],
        "flops": out.get("flops", math.nan),
        "steps_mean": out.get("steps", math.nan),
        "converged_fraction": out.get("converged", math.nan),
        "n_train_pixels": cell["n_train"] * (cell["window"] - 2 * r) ** 2,
        "n_seeds": parts["n_seeds"],
        "n_test_values": parts["n_values"],
        "device": str(ctx.device) if cell["family"] == "cnn" else "cpu",
    }


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Fit the cell's model on every seed's training set and decompose its test error into bias^2 and variance;
    or, for a ``measure`` cell, measure the dataset's symmetry (:func:`measured_symmetry`)."""
    if cell["family"] == "measure":
        return measured_symmetry(cell, ctx)
    if cell["family"] == "linear":
        return [_row(cell, ctx, cell["model"], run_linear(cell, ctx))]
    if cell["family"] == "cnn":
        return [_row(cell, ctx, name, out) for name, out in run_cnn(cell, ctx).items()]
    raise UsageError(f"unknown model family {cell['family']!r}")


def measure_report(sources: list, cell: dict):
    """``symmetry.measure`` on clean training images of a dataset (the rasters the models see, so rotations by
    other than quarter turns are interpolated), every measured group in one call (one Holm family), at one mesh.
    The only place this experiment calls the measurement API."""

    return measure_dataset(
        sources,
        cell["groups"],
        mesh=float(cell["mesh"]),
        radius=float(cell["radius_px"]),
        windows=int(cell["windows"]),
        features=int(cell["features"]),
        permutations=int(cell["permutations"]),
        bootstrap=int(cell["bootstrap"]),
        seed=int(cell["data_seed"]),
        alpha=float(cell["alpha"]),
        device="cpu",
    )


def measured_symmetry(cell: dict, ctx: Context) -> list[dict]:
    """One row per measured group: worst-element eps at the mesh, its null q95, Holm-adjusted p, the verdict, and
    the group this picks (:func:`pick_group`)."""

    spec, count = cell["dataset"]["spec"], int(cell["images"])
    images = clean_images(spec, "train", count, _cell_root(cell, ctx))[:count]
    sources = [ImageSource(f"image-{i}", array=im) for i, im in enumerate(images)]
    report = measure_report(sources, cell)
    verdicts = {v["group"]: v["symmetric"] for v in report.verdicts}
    picked = pick_group(verdicts)
    rows = []
    for group in verdicts:
        worst = report.summary("worst", group).iloc[0]
        rows.append(
            {
                "dataset_name": cell["dataset"]["name"],
                "data_symmetry": cell["dataset"]["symmetry"],
                "kappa": cell["dataset"].get("kappa"),
                "group": group,
                "eps": float(worst["symmetry_error"]),
                "eps_low": float(worst["ci_low"]),
                "eps_high": float(worst["ci_high"]),
                "null_q95": float(worst["null_q95"]),
                "p_adjusted": float(report.verdict(group)["p_adjusted"]),
                "symmetric": verdicts[group],
                "picked": picked,
                "images": len(sources),
            }
        )
    return rows


def _dataset_order(frame: pd.DataFrame, config: dict) -> list[str]:
    names = [d["name"] for d in config["datasets"]]
    present = set(frame["dataset_name"])
    return [n for n in names if n in present]


_STYLES = {
    "risk": ("k", "o", "-", "risk"),
    "bias2": ("#4C72B0", "s", "-", "bias$^2$"),
    "variance": ("#DD8452", "^", "-", "variance"),
}


def _components_figure(frame: pd.DataFrame, config: dict, family: str):
    """Rows: datasets; columns: the smallest and largest training set. Risk, bias^2 (both minus the dataset's linear
    floor, so that 0 is the best linear filter) and variance against the model, in units of 1e-4."""

    t = summary(frame[(frame["family"] == family) & frame["kappa"].isna()])
    floors = linear_floor(frame)
    names = _dataset_order(t, config)
    sizes = sorted(t["n_train"].unique())
    shown = [sizes[0], sizes[-1]] if len(sizes) > 1 else sizes
    fig, axes = subplots(len(shown), len(names), width=3.1, height=2.2)
    unit = 1e-4
    for i, name in enumerate(names):
        floor = floors.get(name, 0.0)
        for j, n in enumerate(shown):
            ax = axes[i, j]
            sub = t[(t["dataset_name"] == name) & (t["n_train"] == n)]
            models = model_order(m for m in sub["model"].astype(str) if m in set(sub["model"].astype(str)))
            sub = sub.set_index(sub["model"].astype(str)).reindex(models)
            xs = np.arange(len(models))
            shift = {"risk": floor, "bias2": floor, "variance": 0.0}
            for comp, (color, marker, ls, label) in _STYLES.items():
                vals = (sub[comp].to_numpy(float) - shift[comp]) / unit
                ax.plot(xs, vals, color=color, marker=marker, ls=ls, label=label)
            ax.axhline(0.0, color=PALETTE[7], ls=":", lw=1, label="best linear filter (floor)")
            ladder = [k for k, m in enumerate(models) if m in LADDER]
            if ladder:
                k = ladder[int(np.nanargmin(sub["risk"].to_numpy(float)[ladder]))]
                best = (sub["risk"].iloc[k] - floor) / unit
                ax.plot(xs[k], best, marker="*", ms=12, color=PALETTE[3], ls="none", label="lowest risk (rotN ladder)")
            match = matched_model(str(sub["data_symmetry"].iloc[0]), models)
            if match in models:
                ax.axvline(models.index(match), color=PALETTE[2], ls="--", lw=1, label="group = data symmetry")
            ax.set_xticks(xs, models, rotation=45, ha="right", fontsize=7)
            ax.set_title(f"{name} ({sub['data_symmetry'].iloc[0]}), n={int(n)}", fontsize=9)
            if j == 0:
                ax.set_ylabel("MSE - floor (1e-4)" if floor else "MSE (1e-4)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.flat:  # a panel without a matched group may lack that entry
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    seeds = int(frame.loc[frame["family"] == family, "n_seeds"].max())
    fig.suptitle(
        f"{family} denoisers: risk = bias$^2$ + variance over {seeds} seeds (disjoint training sets of n windows);\n"
        "risk and bias$^2$ are shown minus the test error of the best linear filter (0 = floor)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7)
    return fig


def _size_figure(frame: pd.DataFrame, config: dict, family: str):
    """Variance (top) and generalisation gap (bottom) against the training-set size, per dataset and model."""

    t = summary(frame[(frame["family"] == family) & frame["kappa"].isna()])
    names = _dataset_order(t, config)
    fig, axes = subplots(len(names), 2, width=2.7, height=2.4)
    for i, name in enumerate(names):
        sub = t[t["dataset_name"] == name]
        order = model_order(sub["model"].astype(str))
        for model in order:
            s = sub[sub["model"].astype(str) == model].sort_values("n_train")
            kw = {"marker": "o", "color": PALETTE[order.index(model) % len(PALETTE)], "label": model}
            axes[0, i].plot(s["n_train"], s["variance"], **kw)
            axes[1, i].plot(s["n_train"], s["generalization_gap"], **kw)
        axes[0, i].set_yscale("log")
        axes[0, i].set_title(f"{name} ({sub['data_symmetry'].iloc[0]})")
        axes[1, i].axhline(0, color="k", lw=0.8)
        sizes = sorted(int(n) for n in sub["n_train"].unique())
        for ax in axes[:, i]:
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.xaxis.set_minor_formatter(NullFormatter())
        axes[1, i].set_xlabel("training windows n")
    axes[0, 0].set_ylabel("variance (test MSE per pixel)")
    axes[1, 0].set_ylabel("test - train MSE per pixel")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(f"{family} denoisers: variance and generalisation gap against the training-set size", fontsize=10)
    fig.tight_layout()
    return fig


def _phase_figure(frame: pd.DataFrame, config: dict):
    """Heat maps over (kappa, n): the measured best ladder group (a star marks a decision not resolved: some other
    group's Holm-adjusted paired test does not reject) and the closed-form prediction."""

    ph = phase(frame, sweep_aliases(config))
    codes = {m: i for i, m in enumerate(LADDER)}
    fig, axes = subplots(2, 1, width=4.2, height=3.2)
    cmap = sns.color_palette("viridis", len(LADDER))
    for ax, column, title in ((axes[0, 0], "best", "measured best group"), (axes[0, 1], "predicted", "predicted")):
        grid = ph.pivot(index="kappa", columns="n_train", values=column)
        label = grid.copy().astype(object)
        if column == "best":
            ties = ph.pivot(index="kappa", columns="n_train", values="tied")
            label = grid + ties.map(lambda t: "*" if t else "")
        sns.heatmap(
            grid.map(codes.get).astype(float),
            annot=label.to_numpy(),
            fmt="",
            cmap=cmap,
            vmin=-0.5,
            vmax=len(LADDER) - 0.5,
            cbar=False,
            ax=ax,
            annot_kws={"fontsize": 7},
        )
        ax.invert_yaxis()
        ax.set_xlabel("training windows n")
        ax.set_ylabel("kappa (larger = less rot8-symmetric)")
        ax.set_title(title)
    if "eps_rot8" in ph:
        eps = ph.groupby("kappa")["eps_rot8"].first()
        axes[0, 1].set_yticklabels([f"{k:g} (eps {1e3 * eps[k]:.2f}e-3)" for k in sorted(eps.index)], fontsize=7)
    resolved = ph[ph["resolved"].astype(bool)]
    hits = int((resolved["predicted"] == resolved["best"]).sum())
    fig.suptitle(
        f"eps sweep (kfold k=4 data): best linear group, * = tied after Holm (5% per cell); prediction "
        f"argmin sigma_G^2 (1 + p_G / (N_eff - p_G - 1)) names the best in {hits}/{len(resolved)} resolved cells",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def _decisions_figure(frame: pd.DataFrame):
    """Paired differences with 95% t intervals: runner-up minus best, matched minus best, and every arm minus its
    constrained model, per (family, dataset, n). Intervals crossing 0 are decisions the seeds cannot make."""

    dec = decisions(frame[frame["kappa"].isna()])
    rows = []
    for r in dec.itertuples():
        tag, unit = f"{r.family} {r.dataset_name} n={r.n_train}", 100.0 / r.best_risk
        rows.append((f"{tag}: {r.runner_up} - {r.best}", r.diff * unit, r.low * unit, r.high * unit, 0))
        if isinstance(r.matched, str) and r.matched != r.best:
            what = f"{tag}: {r.matched} (matched) - {r.best}"
            rows.append((what, r.matched_diff * unit, r.matched_low * unit, r.matched_high * unit, 1))
        for name, (mean, low, high) in json.loads(r.arms).items():
            rows.append((f"{tag}: {name} - {arm(name)[1]}", mean * unit, low * unit, high * unit, 2))
    fig, axes = subplots(1, 1, width=7.0, height=max(3.0, 0.14 * len(rows)))
    ax = axes[0, 0]
    for i, (_, mean, low, high, kind) in enumerate(rows):
        ax.errorbar(mean, len(rows) - i, xerr=[[mean - low], [high - mean]], fmt="o", color=PALETTE[kind], ms=3)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks([len(rows) - i for i in range(len(rows))], [what for what, *_ in rows], fontsize=5)
    ax.set_xlabel("paired risk difference, % of the best model's risk (95% t interval over seeds)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_title("every best-group decision with its interval (blue: runner-up, orange: matched, green: arms)")
    fig.tight_layout()
    return fig


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """Per family: risk / bias^2 / variance against the model per dataset (``components``) and variance and
    generalisation gap against n (``size``); the eps x n phase diagram (``phase``); every decision's paired
    interval (``decisions``)."""
    figs = {}
    for family in ("linear", "cnn"):
        if (frame["family"] == family).any():
            figs[f"{family}-components"] = _components_figure(frame, config, family)
            if frame.loc[frame["family"] == family, "n_train"].nunique() > 1:
                figs[f"{family}-size"] = _size_figure(frame, config, family)
    if not phase(frame, sweep_aliases(config)).empty:
        figs["phase"] = _phase_figure(frame, config)
    figs["decisions"] = _decisions_figure(frame)
    return figs


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Sentences computed from the results: per family and dataset the best ladder group at every n with the
    paired runner-up interval (or the tie set), whether it is the matched group, the arms against the constrained
    model, the phase diagram's agreement with the closed form, and whether measured eps predicted the best group."""
    dec = decisions(frame[frame["kappa"].isna()])
    out = []
    for family in [f for f in ("linear", "cnn") if f in set(dec["family"])]:
        fam = dec[dec["family"] == family]
        known = fam[fam["matches"].notna()]
        resolved = known[known["resolved"]]
        out.append(
            f"{family}: the lowest mean risk is at the group matching the data's symmetry in "
            f"{int(known['matches'].sum())}/{len(known)} settings with known symmetry; "
            f"{int(resolved['matches'].sum())}/{len(known)} are matched AND resolved (every other ladder group's "
            f"paired t test over {int(fam['n_seeds'].max())} seeds rejects after Holm's adjustment, 5% per setting)."
        )
        for r in fam.itertuples():
            text = f"  {family} {r.dataset_name} [{r.data_symmetry}] n={r.n_train}: best {r.best}"
            if r.resolved:
                text += f"; {r.runner_up} - {r.best} = {interval(r.diff, r.low, r.high)}"
            else:
                text += f", tied with {r.tied.replace(',', ', ')} ({r.runner_up} - {r.best} = "
                text += f"{interval(r.diff, r.low, r.high)})"
            if isinstance(r.matched, str) and r.matched != r.best:
                text += f"; matched {r.matched} - {r.best} = {interval(r.matched_diff, r.matched_low, r.matched_high)}"
            for name, (mean, low, high) in json.loads(r.arms).items():
                text += f"; {name} - {arm(name)[1]} = {interval(mean, low, high)}"
            out.append(text + ".")
        if family == "cnn" and training_text(frame):
            out.append(f"  cnn training: {training_text(frame)}")
    ph = phase(frame, sweep_aliases(config))
    if not ph.empty:
        out.append(
            f"eps sweep (linear, kfold k=4 over kappa {', '.join(f'{k:g}' for k in sorted(ph['kappa'].unique()))} "
            f"x n {', '.join(str(n) for n in sorted(ph['n_train'].unique()))}): " + phase_sentence(ph) + "."
        )
    pr = predictions(frame[frame["kappa"].isna()])
    if not pr.empty:
        for family in [f for f in ("linear", "cnn") if f in set(pr["family"])]:
            sub = pr[pr["family"] == family]
            items = []
            for r in sub.itertuples():
                item = f"{r.dataset_name}: measured {r.picked}, best {r.best}"
                if not r.picked_is_best:
                    item += f" ({r.picked} - {r.best} = {interval(r.diff, r.low, r.high)})"
                items.append(item)
            out.append(
                f"measured eps -> group ({family}, largest n): the picked group's model has the lowest risk in "
                f"{int(sub['picked_is_best'].sum())}/{len(sub)} datasets and is within the 95% interval of the "
                f"best in {int(sub['within'].sum())}/{len(sub)}: " + "; ".join(items) + "."
            )
    return "\n".join(out)


__all__ = ["cells", "figures", "readme_paragraph", "run_cell", "verdict"]
