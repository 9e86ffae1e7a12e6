"""``calibration``: are the symmetry test's p-values uniform on exactly symmetric photographs? (issue 20)

Random subsets of ``images`` photographs of each source (Rain100L clean training photos, B100 HR photos), at their
native size and upscaled 2x (the project's cubic, :func:`symmetry.transforms.to_mesh` at mesh 1/2: larger images of
the same scenes), are made exactly dih4-invariant: every photo is moved by a uniformly random element of dih4
(:func:`experiments.symmetry_power.symmetrise`, :func:`symmetry.transforms.transform_image`). The groups rot4, flip,
flipud and dih4 are then all null hypotheses, and an exact randomisation test gives each group's p-value a law
that is uniform (up to the 1 / (B + 1) grid), at every subset size, image size and setting.

Each cell measures one subset with one setting (the default aggregated test or a preset) for every group in one
run and stores each group's p-value (``p_value``: its one-threshold p over kernels, meshes and elements, before the
Holm step over groups) and its verdict (``rejected``: after Holm over the run's groups). Tables: the
Kolmogorov-Smirnov distance of the p-values from uniform and the rejection rate of ``p_value <= alpha`` with a
Wilson interval, per (source, size, setting, group); a QQ figure.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import symmetry
from experiments.runner import Context
from experiments.style import subplots
from experiments.symmetry_power import photo_sources, subset_indices, symmetrise, wilson
from symmetry.settings import preset_options
from symmetry.sources import ImageSource
from symmetry.transforms import to_mesh

GROUPS = ("rot4", "flip", "flipud", "dih4")


def cells(config: dict) -> list[dict]:
    """One cell per (source, size, setting, subset)."""

    out = []
    for name, given in config["settings"].items():
        options = {**preset_options(given.get("preset")), **given}  # the hash follows the preset's content
        if "mesh" in options:
            options["mesh"] = [float(h) for h in options["mesh"]]
        for source in config["sources"]:
            for scale in config["scales"]:
                for subset in range(int(config["subsets"])):
                    out.append(
                        {
                            "setting": name,
                            "options": dict(options),
                            "source": source,
                            "scale": float(scale),
                            "seed": int(config["seed"]),
                            "subset": subset,
                            "images": int(config["images"]),
                            "groups": ",".join(config.get("groups", GROUPS)),
                            "permutations": int(config["permutations"]),
                            "alpha": float(config["alpha"]),
                        }
                    )
    out.sort(key=lambda c: c["subset"])  # subset by subset: a partial run covers every setting, source and size
    return out


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """One exactly symmetrised subset measured for every group: one row per group (p-value, verdict)."""
    import torch

    photos = photo_sources(ctx, cell["source"])
    chosen = [photos[i] for i in subset_indices(len(photos), cell["images"], cell["seed"], cell["subset"])]
    if cell["scale"] != 1.0:
        chosen = [
            ImageSource(src.name, array=to_mesh(src.array.to(torch.float64), 1 / cell["scale"]).float())
            for src in chosen
        ]
    chosen = symmetrise(chosen, cell["seed"], cell["subset"])
    options = {k: v for k, v in cell["options"].items() if k != "preset"}
    mesh = options.pop("mesh", None)
    report = symmetry.measure_dataset(
        chosen,
        cell["groups"],
        mesh,
        seed=cell["seed"] * 1000 + cell["subset"],
        permutations=cell["permutations"],
        bootstrap=0,
        alpha=cell["alpha"],
        device=ctx.device,
        **options,
    )
    return [
        {
            "group": v["group"],
            "p_value": v["p_value"],
            "p_adjusted": v["p_adjusted"],
            "rejected": v["symmetric"] is False,
            "p_floor": report.meta["p_floor"],
            "measure_seconds": report.meta["seconds"],
        }
        for v in report.verdicts
    ]


def ks_uniform(p: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance ``sup_t |F_n(t) - t|`` of p-values from the uniform law on [0, 1]."""
    p = np.sort(np.asarray(p, dtype=np.float64))
    n = len(p)
    if n == 0:
        return math.nan
    ranks = np.arange(1, n + 1) / n
    return float(max(np.max(ranks - p), np.max(p - (ranks - 1 / n))))


def table(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (setting, source, scale, group): subsets, KS distance from uniform, rejection rate at alpha (unadjusted
    group p) with its 95% Wilson interval and the Bonferroni-adjusted one over all the cells (``fw_low``,
    ``fw_high``: level 1 - 0.05 / cells), the Holm verdicts' rejection rate, and the share of p-values above 0.9."""
    out = []
    groups = frame.groupby(["setting", "source", "scale", "group"], sort=False)
    family = 1 - 0.05 / max(1, groups.ngroups)
    for key, sub in groups:
        p = sub["p_value"].astype(float).to_numpy()
        k, n = int((p <= alpha).sum()), len(p)
        lo, hi = wilson(k, n)
        fw_lo, fw_hi = wilson(k, n, family)
        out.append(
            {
                **dict(zip(["setting", "source", "scale", "group"], key)),
                "subsets": n,
                "ks": ks_uniform(p),
                "rejected": k,
                "rate": k / n,
                "low": lo,
                "high": hi,
                "fw_low": fw_lo,
                "fw_high": fw_hi,
                "holm_rate": float(sub["rejected"].astype(bool).mean()),
                "above_0.9": float((p > 0.9).mean()),
            }
        )
    return pd.DataFrame(out)


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """QQ plot of the p-values against the uniform law, one panel per (setting, source and size), one line per group."""
    import seaborn as sns

    frame = frame.copy()
    frame["sample"] = [f"{r['source']}, {r['scale']:g}x" for _, r in frame.iterrows()]
    settings = list(dict.fromkeys(frame["setting"]))
    samples = list(dict.fromkeys(frame["sample"]))
    groups = [g for g in config.get("groups", GROUPS) if g in set(frame["group"])]
    colors = dict(zip(groups, sns.color_palette(n_colors=len(groups))))
    fig, axes = subplots(len(settings), len(samples), width=3.0, height=3.0)
    axes = np.asarray(axes).reshape(len(settings), len(samples))
    stats = table(frame, float(config["alpha"]))
    for i, setting in enumerate(settings):
        for j, sample in enumerate(samples):
            ax = axes[i, j]
            sub = frame[(frame["setting"] == setting) & (frame["sample"] == sample)]
            for group in groups:
                p = np.sort(sub.loc[sub["group"] == group, "p_value"].astype(float).to_numpy())
                if len(p):
                    ks = stats[
                        (stats["setting"] == setting)
                        & (stats["source"] == sub["source"].iloc[0])
                        & (stats["scale"] == sub["scale"].iloc[0])
                        & (stats["group"] == group)
                    ]["ks"].iloc[0]
                    ax.plot(
                        (np.arange(1, len(p) + 1) - 0.5) / len(p),
                        p,
                        color=colors[group],
                        lw=1.2,
                        label=f"{group} (KS {ks:.2f})",
                    )
            ax.plot([0, 1], [0, 1], color="0.3", ls=":", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{setting}: {sample}", fontsize=8)
            ax.set_xlabel("uniform quantile", fontsize=8)
            ax.set_ylabel("p-value quantile", fontsize=8)
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("Calibration on exactly dih4-symmetrised photo subsets (QQ against uniform; dotted: exact)")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return {"qq": fig}


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """KS <= 0.1 in every (setting, source, size, group) cell, and alpha inside every cell's Bonferroni-adjusted
    Wilson interval (family-wise 95% over the cells). With many cells, per-cell 95% intervals miss alpha by design
    (an exact test misses in 5% of the cells), so their count is reported beside the expected one."""
    alpha = float(config["alpha"])
    stats = table(frame, alpha)
    if stats.empty:
        return "no cells (target: KS <= 0.1 and alpha in every interval: NOT met)"
    worst = stats.loc[stats["ks"].idxmax()]
    misses = int(((stats["low"] > alpha) | (stats["high"] < alpha)).sum())
    fw_misses = int(((stats["fw_low"] > alpha) | (stats["fw_high"] < alpha)).sum())
    n = len(stats)
    chance = 1 - sum(math.comb(n, j) * 0.05**j * 0.95 ** (n - j) for j in range(misses))  # P(>= misses | exact)
    text = (
        f"{n} cells of {int(stats['subsets'].min())}-{int(stats['subsets'].max())} subsets; largest KS "
        f"{worst['ks']:.3f} ({worst['setting']}, {worst['source']} {worst['scale']:g}x, {worst['group']}); rejection "
        f"rates {stats['rate'].min():.3f}-{stats['rate'].max():.3f}; alpha outside {misses} of {n} per-cell 95% "
        f"Wilson intervals (an exact test: {0.05 * n:.1f} expected, {misses} or more with probability {chance:.2f}) "
        f"and outside {fw_misses} of {n} Bonferroni-adjusted ones"
    )
    met = bool((stats["ks"] <= 0.1).all()) and fw_misses == 0
    return text + f" (target: KS <= 0.1 and alpha in every family-wise interval: {'met' if met else 'NOT met'})"
