"""Decisions from the bias-variance results: the best group per setting with paired intervals over seeds
(Holm-adjusted), the phase diagram against the closed form, and the group picked from the measured symmetry.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from analysis.linear_denoisers import arm
from symmetry.groups import UnknownGroupError, get_group, is_subgroup
from theory.bias_variance import effective_rows, holm, ols_risk, paired_difference

LADDER = ["plain", "rot2", "rot4", "rot8", "rot16"]
"""Models ordered by increasing equivariance (each group contains the previous one). Arms beside the ladder:
``aug:rotN`` (plain model trained on rotN-augmented data), ``avg:rotN`` (Lemma 4.1 group average of the trained
plain model) and ``sa``."""


LEVEL = 0.95
"""Confidence level of every interval: paired Student t over seeds."""
ALPHA = 1 - LEVEL
"""Family-wise error rate of each setting's best-group comparisons (Holm)."""


def model_order(models) -> list[str]:
    """The ladder first, then the arms (``aug:``, ``avg:``), then ``sa``."""
    present = list(dict.fromkeys(str(m) for m in models))
    rest = sorted(m for m in present if m not in LADDER and m != "sa")
    return [m for m in LADDER if m in present] + rest + (["sa"] if "sa" in present else [])


def pick_group(verdicts: dict[str, bool | None], ladder=LADDER) -> str:
    """The largest ladder group inside the measured symmetry: walking up the chain plain < rot2 < rot4 < ...,
    the last group before the first one whose Holm-adjusted test rejects symmetry (``False``) or has no verdict."""
    picked = "plain"
    for group in ladder[1:]:
        if group not in verdicts:
            continue
        if verdicts[group] is not True:
            break
        picked = group
    return picked


def matched_model(symmetry: str, models) -> str | None:
    """The ladder model whose group is the largest one inside the data's symmetry group (None when it is unknown).

    ``symmetry`` is a group name (:func:`symmetry.groups.get_group`), ``so2`` (every rotation: every ladder group lies
    inside), ``none`` (only ``plain``) or anything else (unknown). Inclusion is :func:`symmetry.groups.is_subgroup`.
    """
    if symmetry not in ("so2", "none"):
        try:
            get_group(symmetry)
        except UnknownGroupError:
            return None
    present = set(models)

    def inside(model: str) -> bool:
        if model == "plain" or symmetry == "so2":
            return True
        return symmetry != "none" and is_subgroup(model, symmetry)

    candidates = [m for m in LADDER if m in present and inside(m)]
    return candidates[-1] if candidates else None


def models_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The model rows, with ``bias2_corrected = bias2 - variance / (S - 1)`` and ``excess_bias2 =
    bias2_corrected - noise`` computed from the stored components (:func:`theory.bias_variance.decompose`), so rows
    stored before the correction existed read the same."""
    f = frame[frame["family"].isin(["linear", "cnn"])].copy()
    if {"bias2", "variance", "n_seeds", "noise"} <= set(f.columns):
        f["bias2_corrected"] = f["bias2"] - f["variance"] / (f["n_seeds"] - 1)
        f["excess_bias2"] = f["bias2_corrected"] - f["noise"]
    return f


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, dataset, n_train, model) in :func:`model_order`, with the decomposition's columns."""
    cols = [
        "risk",
        "bias2",
        "bias2_corrected",
        "variance",
        "noise",
        "excess_bias2",
        "generalization_gap",
        "train_risk",
        "oracle_risk",
        "input_risk",
        "params",
        "flops",
        "steps_mean",
        "converged_fraction",
        "n_train_pixels",
    ]
    f = models_frame(frame)
    cols = [c for c in cols if c in f.columns]
    keys = ["family", "dataset_name", "data_symmetry", "n_train", "model"]
    t = f.groupby(keys, sort=False, dropna=False)[cols].mean().reset_index()
    t["model"] = pd.Categorical(t["model"], model_order(t["model"]), ordered=True)
    return t.sort_values(["family", "dataset_name", "n_train", "model"]).reset_index(drop=True)


def seed_risks(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (family, dataset, n_train, model, seed) with that seed's test risk."""
    rows = []
    for r in models_frame(frame).itertuples():
        for seed, risk in zip(json.loads(r.seeds), json.loads(r.seed_risks)):
            rows.append(
                {
                    "family": r.family,
                    "dataset_name": r.dataset_name,
                    "data_symmetry": r.data_symmetry,
                    "n_train": int(r.n_train),
                    "model": r.model,
                    "seed": int(seed),
                    "risk": float(risk),
                }
            )
    return pd.DataFrame(rows)


def paired_risks(per_seed: pd.DataFrame, a: str, b: str) -> dict[str, float]:
    """Paired ``risk_a - risk_b`` over the seeds both models have (:func:`theory.bias_variance.paired_difference`)."""
    wide = per_seed.pivot(index="seed", columns="model", values="risk")[[a, b]].dropna()
    return paired_difference(wide[a].to_numpy(), wide[b].to_numpy(), LEVEL)


def decisions(frame: pd.DataFrame) -> pd.DataFrame:
    """Every "best group" decision with its uncertainty, per (family, dataset, n_train).

    ``best``: the ladder model of lowest mean risk. ``runner_up`` and ``diff``/``low``/``high``: the paired
    difference runner-up minus best with its 95% t interval over seeds. ``tied``: the ladder models whose paired
    t test against the best does not reject at level ``ALPHA`` after Holm's adjustment over the setting's
    comparisons (:func:`theory.bias_variance.holm`; ``p_holm`` the runner-up's adjusted p-value); the decision is
    ``resolved`` when there are none. ``matched``: the
    ladder model matching the data's known symmetry, with ``matched_diff`` (matched minus best) and its interval.
    Arms: ``aug:G``/``avg:G`` minus the constrained model ``G`` (``arm_...`` columns, one row per arm in ``arms``).
    """
    per_seed = seed_risks(frame)
    rows = []
    for (family, name, sym, n), sub in per_seed.groupby(
        ["family", "dataset_name", "data_symmetry", "n_train"], sort=False
    ):
        means = sub.groupby("model")["risk"].mean()
        ladder = [m for m in LADDER if m in means.index]
        if len(ladder) < 2:
            continue
        best = min(ladder, key=lambda m: means[m])
        diffs = {m: paired_risks(sub, m, best) for m in ladder if m != best}
        runner = min(diffs, key=lambda m: diffs[m]["mean"])
        adjusted = dict(zip(diffs, holm([d["p"] for d in diffs.values()]), strict=True))
        tied = [m for m in diffs if not adjusted[m] < ALPHA]
        match = matched_model(sym, ladder)
        md = paired_risks(sub, match, best) if match and match != best else None
        arms = {}
        for m in means.index:
            kind, group = arm(m)
            if kind in ("aug", "avg") and group in means.index:
                arms[m] = paired_risks(sub, m, group)
        rows.append(
            {
                "family": family,
                "dataset_name": name,
                "data_symmetry": sym,
                "n_train": int(n),
                "best": best,
                "best_risk": float(means[best]),
                "runner_up": runner,
                "diff": diffs[runner]["mean"],
                "low": diffs[runner]["low"],
                "high": diffs[runner]["high"],
                "p_holm": float(adjusted[runner]),
                "tied": ",".join(tied),
                "resolved": not tied,
                "matched": match,
                "matches": None if match is None else best == match,
                "matched_diff": 0.0 if match == best else (md["mean"] if md else math.nan),
                "matched_low": 0.0 if match == best else (md["low"] if md else math.nan),
                "matched_high": 0.0 if match == best else (md["high"] if md else math.nan),
                "arms": json.dumps({k: [v["mean"], v["low"], v["high"]] for k, v in arms.items()}),
                "n_seeds": int(sub["seed"].nunique()),
            }
        )
    return pd.DataFrame(rows)


def with_aliases(frame: pd.DataFrame, aliases: dict[str, tuple[str, float]] | None) -> pd.DataFrame:
    """``frame`` plus copies of the linear rows of every dataset that a sweep dataset duplicates: ``aliases`` maps
    the sweep name to ``(dataset it equals, kappa)`` (the same data are computed once)."""
    if not aliases:
        return frame
    frame = frame[~frame["dataset_name"].isin(list(aliases))]  # rows stored under the alias before it was one
    copies = []
    for alias, (name, kappa) in aliases.items():
        rows = frame[(frame["dataset_name"] == name) & frame["family"].isin(["linear", "measure"])]
        rows = rows[(rows["family"] == "measure") | rows["model"].astype(str).isin(LADDER)]
        copies.append(rows.assign(dataset_name=alias, kappa=float(kappa)))
    return pd.concat([frame, *copies], ignore_index=True)


def phase(frame: pd.DataFrame, aliases: dict[str, tuple[str, float]] | None = None) -> pd.DataFrame:
    """The eps sweep: per (kappa, n_train) the measured best ladder group (linear, with its Holm tie set) against
    the closed-form prediction ``argmin_G ols_risk(oracle_G, p_G, N_eff)`` (:func:`theory.bias_variance.ols_risk`;
    ``oracle_G`` the risk of the G-invariant filter fitted on the whole pool = noise + bias b*eps, ``p_G`` the
    dimension of the G-invariant filters, ``N_eff = c N`` the effective number of independent rows: overlapping
    windows are not independent, so ``c`` is calibrated per dataset on the plain filter alone, the median over n of
    :func:`theory.bias_variance.effective_rows` / ``N``), the predicted and measured excess risk
    ``risk_G - oracle_G`` of the measured best model with their ratio, whether the cell is resolved, and the
    measured eps of rot8 (from the ``measure`` rows). ``agrees``: the prediction names the best or a tied group;
    ``agrees_resolved``: resolved cells only."""
    frame = with_aliases(frame, aliases)
    lin = frame[(frame["family"] == "linear") & frame["kappa"].notna()]
    if lin.empty:
        return pd.DataFrame()
    dec = decisions(lin).set_index(["dataset_name", "n_train"])
    t = summary(lin)
    kappas = lin.groupby("dataset_name")["kappa"].first()
    rows = []
    for name, data in t.groupby("dataset_name", sort=False):
        plain = data[data["model"].astype(str) == "plain"]
        ratios = [effective_rows(r.oracle_risk, r.risk, int(r.params)) / r.n_train_pixels for r in plain.itertuples()]
        finite = [v for v in ratios if math.isfinite(v)]
        c = float(np.median(finite)) if finite else 1.0
        for n, sub in data.groupby("n_train", sort=False):
            sub = sub[sub["model"].astype(str).isin(LADDER)].set_index(sub["model"].astype(str))
            pred = {m: ols_risk(r.oracle_risk, int(r.params), c * r.n_train_pixels) for m, r in sub.iterrows()}
            predicted = min(pred, key=pred.get)
            d = dec.loc[(name, int(n))]
            tied = [m for m in str(d["tied"]).split(",") if m]
            best = sub.loc[d["best"]]
            measured_excess = float(best["risk"] - best["oracle_risk"])
            predicted_excess = float(pred[d["best"]] - best["oracle_risk"])
            rows.append(
                {
                    "dataset_name": name,
                    "kappa": float(kappas[name]),
                    "n_train": int(n),
                    "best": d["best"],
                    "tied": ",".join(tied),
                    "resolved": not tied,
                    "predicted": predicted,
                    "agrees": predicted == d["best"] or predicted in tied,
                    "agrees_resolved": (predicted == d["best"]) if not tied else None,
                    "rows_per_pixel": c,
                    "effective_rows": c * float(best["n_train_pixels"]),
                    "predicted_excess": predicted_excess,
                    "measured_excess": measured_excess,
                    "excess_ratio": predicted_excess / measured_excess if measured_excess > 0 else math.nan,
                    "naive_excess_ratio": (
                        (
                            ols_risk(best["oracle_risk"], int(best["params"]), best["n_train_pixels"])
                            - best["oracle_risk"]
                        )
                        / measured_excess
                        if measured_excess > 0
                        else math.nan
                    ),
                }
            )
    out = pd.DataFrame(rows).sort_values(["kappa", "n_train"]).reset_index(drop=True)
    meas = frame[frame["family"] == "measure"]
    if not meas.empty:
        eps = meas[meas["group"] == "rot8"].groupby("dataset_name")["eps"].first()
        out["eps_rot8"] = out["dataset_name"].map(eps)
    return out


def predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """Item 5: per dataset and family, the group :func:`pick_group` chose from the measured eps, the best model at
    the largest training set, and whether the picked group's model has the lowest risk: ``picked - best`` with its
    paired interval (``within`` when the interval contains 0, i.e. the data cannot tell them apart)."""
    meas = frame[frame["family"] == "measure"]
    if meas.empty:
        return pd.DataFrame()
    picked = meas.groupby("dataset_name")["picked"].first()
    dec = decisions(frame)
    per_seed = seed_risks(frame)
    rows = []
    for (family, name), sub in dec.groupby(["family", "dataset_name"], sort=False):
        if name not in picked.index:
            continue
        last = sub.loc[sub["n_train"].idxmax()]
        pick = picked[name]
        seeds = per_seed[
            (per_seed["family"] == family)
            & (per_seed["dataset_name"] == name)
            & (per_seed["n_train"] == last["n_train"])
        ]
        if pick not in set(seeds["model"]):
            continue
        d = {"mean": 0.0, "low": 0.0, "high": 0.0} if pick == last["best"] else paired_risks(seeds, pick, last["best"])
        rows.append(
            {
                "family": family,
                "dataset_name": name,
                "data_symmetry": last["data_symmetry"],
                "n_train": int(last["n_train"]),
                "picked": pick,
                "best": last["best"],
                "picked_is_best": pick == last["best"],
                "best_risk": float(last["best_risk"]),
                "diff": d["mean"],
                "low": d["low"],
                "high": d["high"],
                "within": pick == last["best"] or not d["low"] > 0,
            }
        )
    return pd.DataFrame(rows)


def linear_floor(frame: pd.DataFrame) -> dict[str, float]:
    """Per dataset, the test MSE of the plain linear filter fitted on the whole pool (the ``noise`` of linear rows)."""
    lin = frame[(frame["family"] == "linear") & frame["noise"].notna()]
    return lin.groupby("dataset_name")["noise"].mean().to_dict()
