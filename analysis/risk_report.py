"""Sentences on the bias-variance results, computed from them: intervals, the CNN training clause and the
README paragraph of the ``bias_variance`` experiment.
"""

from __future__ import annotations

import json

import pandas as pd

from analysis.denoise_windows import sweep_aliases
from analysis.linear_denoisers import arm
from analysis.risk_decisions import decisions, model_order, phase, predictions, summary


def sci(x: float) -> str:
    return f"{x:.2e}"


def interval(mean: float, low: float, high: float) -> str:
    return f"{sci(mean)} [{sci(low)}, {sci(high)}]"


def training_text(frame: pd.DataFrame) -> str:
    """A clause on the CNN training, computed from the results: runs that met the convergence rule of
    :func:`train_network` (trained models only; ``avg:`` rows reuse the plain networks), the mean steps per model,
    the parameters and the forward FLOPs per window. Empty without CNN rows."""
    conv = frame[(frame["family"] == "cnn") & frame["converged_fraction"].notna()]
    if conv.empty:
        return ""
    trained = conv[~conv["model"].astype(str).str.startswith("avg:")]
    runs = trained["n_seeds"].sum()
    met = (trained["converged_fraction"] * trained["n_seeds"]).round().sum()
    t = summary(conv)
    steps = trained.groupby("model", sort=False)["steps_mean"].mean()
    per_model = trained.groupby("model", sort=False).apply(
        lambda g: f"{int((g['converged_fraction'] * g['n_seeds']).round().sum())}/{int(g['n_seeds'].sum())}",
        include_groups=False,
    )
    window = int(conv["window"].max())
    return (
        f"{int(met)}/{int(runs)} runs ({100 * met / runs:.0f}%) met the convergence rule (full "
        f"training loss falling by less than {conv['tol'].max():g} relative per {int(conv['check_every'].max())} "
        f"steps at the final learning rate, after {int(conv['decays'].max())} decays; cap "
        f"{int(conv['max_steps'].max())} steps): "
        + ", ".join(f"{m} {per_model[m]} in {steps[m]:.0f} steps" for m in model_order(steps.index))
        + "; parameters "
        + ", ".join(f"{m} {int(p)}" for m, p in t.groupby("model", observed=True)["params"].first().items())
        + f"; forward FLOPs per {window}x{window} window "
        + ", ".join(f"{m} {f:.3g}" for m, f in t.groupby("model", observed=True)["flops"].first().items())
        + "."
    )


def pct(value: float, base: float) -> str:
    return f"{100 * value / base:+.3f}%"


def readme_paragraph(frame: pd.DataFrame, config: dict) -> str:
    """The README's bias-variance paragraph, computed from the results: at the largest n of every (family, dataset)
    the best ladder group with the paired 95% t interval of runner-up (or matched) minus best in % of the best
    risk, the arms, the phase diagram's agreement with the closed form, and the measured-eps prediction."""
    dec = decisions(frame[frame["kappa"].isna()])
    parts = []
    for family in [f for f in ("linear", "cnn") if f in set(dec["family"])]:
        fam = dec[dec["family"] == family]
        items = []
        for name, sub in fam.groupby("dataset_name", sort=False):
            r = sub.loc[sub["n_train"].idxmax()]
            base = r["best_risk"]
            text = f"{name} [{r['data_symmetry']}] n={r['n_train']}: {r['best']}"
            text += f" ({r['runner_up']} {pct(r['diff'], base)} [{pct(r['low'], base)}, {pct(r['high'], base)}]"
            if isinstance(r["matched"], str) and r["matched"] != r["best"]:
                text += (
                    f"; matched {r['matched']} {pct(r['matched_diff'], base)} "
                    f"[{pct(r['matched_low'], base)}, {pct(r['matched_high'], base)}]"
                )
            text += ")" if r["resolved"] else f"; tied with {r['tied'].replace(',', ', ')})"
            items.append(text)
        known = fam[fam["matches"].notna()]
        resolved = known[known["resolved"] & known["matches"].astype(bool)]
        arms = {}
        for r in fam.itertuples():
            for name, (_, low, high) in json.loads(r.arms).items():
                arms.setdefault(name, []).append((low > 0) - (high < 0))
        arm_text = ", ".join(
            f"{name} vs {arm(name)[1]}: worse in {v.count(1)}, better in {v.count(-1)}, tied in {v.count(0)} "
            f"of {len(v)}"
            for name, v in sorted(arms.items())
        )
        parts.append(
            f"*{family}* ({int(fam['n_seeds'].max())} seeds; best group, then runner-up or matched minus best in % of "
            f"the best risk with its 95% paired t interval): the lowest mean risk is at the matched group in "
            f"{int(known['matches'].sum())}/{len(known)} (dataset, n) settings of known symmetry, resolved "
            f"(every other group's paired test rejects, Holm 5%) in {len(resolved)}; at the largest n: "
            + "; ".join(items)
            + f". Arms (paired intervals): {arm_text}."
            + (f" Training: {training_text(frame)}" if family == "cnn" and training_text(frame) else "")
        )
    ph = phase(frame, sweep_aliases(config))
    if not ph.empty:
        parts.append(
            f"*Phase diagram* (kfold k=4, kappa {', '.join(f'{k:g}' for k in sorted(ph['kappa'].unique()))} x n): "
            + phase_sentence(ph)
            + "."
        )
    pr = predictions(frame[frame["kappa"].isna()])
    if not pr.empty:
        for family in [f for f in ("linear", "cnn") if f in set(pr["family"])]:
            sub = pr[pr["family"] == family]
            picks = ", ".join(
                f"{r.dataset_name} {r.picked}"
                + (
                    " (= best)"
                    if r.picked_is_best
                    else f" (best {r.best}; {r.picked} - {r.best} {pct(r.diff, r.best_risk)} "
                    f"[{pct(r.low, r.best_risk)}, {pct(r.high, r.best_risk)}])"
                )
                for r in sub.itertuples()
            )
            hits, within = int(sub["picked_is_best"].sum()), int(sub["within"].sum())
            parts.append(
                f"*Measured eps -> group* ({family}): the picked group is the best in {hits}/{len(sub)} datasets "
                f"and within the best's interval in {within}/{len(sub)}: {picks}."
            )
    return " ".join(parts)


def phase_sentence(ph: pd.DataFrame) -> str:
    """The phase diagram's agreement with the closed form, on all cells and on the resolved ones, and how well the
    closed form predicts the best model's excess risk (with the calibrated effective rows and with ``N`` pixels)."""
    resolved = ph[ph["resolved"].astype(bool)]
    hits = int((resolved["predicted"] == resolved["best"]).sum())
    ratio, naive = ph["excess_ratio"].dropna(), ph["naive_excess_ratio"].dropna()
    per_pixel = ph.groupby("dataset_name")["rows_per_pixel"].first()
    return (
        f"the closed form (N_eff = c N independent rows, c = {per_pixel.min():.3g}..{per_pixel.max():.3g} per pixel, "
        f"calibrated on the plain filter alone) names the measured best group in {hits}/{len(resolved)} resolved "
        f"cells (Holm, family-wise 5% per cell; {len(ph) - len(resolved)} cells tied, where it names the best or a "
        f"tied group in {int(ph.loc[~ph['resolved'].astype(bool), 'agrees'].sum())}); predicted/measured excess "
        f"risk of the best model: median {ratio.median():.2f} (range {ratio.min():.2f}..{ratio.max():.2f}) with "
        f"N_eff, {naive.median():.2f} ({naive.min():.2f}..{naive.max():.2f}) with N = training pixels"
    )
