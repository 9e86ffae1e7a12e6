"""Paired differences with intervals, the paper-style table and the gain figure of ``sr_benchmark``.

:func:`paired_interval` is the interval of a mean paired difference ``d[s, i]`` (seed ``s``, test image ``i``) in
which both the seeds and the images are random draws (a crossed two-way random-effects model,
``d = mu + a_s + b_i + e_si``): ``Var(mean) = sigma_a^2 / S + sigma_b^2 / I + sigma_e^2 / (S I)``, estimated from
the two-way ANOVA mean squares as ``(MS_seed + MS_image - MS_residual) / (S I)``, with Satterthwaite's degrees
of freedom for the t quantile. With one seed it is the usual paired t interval over images. Model ``A`` and
model ``B`` are paired by seed (same seed: same initialisation draw and the same data stream) and by image.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats

from experiments.runner import read_results
from experiments.style import subplots

ORDER = ["bicubic", "plain", "plain-matched", "rot4", "rot8", "flip", "tl", "tl-cont", "sa"]
COMPARISONS = [
    ("plain", "bicubic", "plain over bicubic (the scale check)"),
    ("rot8", "plain", "claim (1): equivariant rot8 over plain"),
    ("rot8", "plain-matched", "claim (1): equivariant rot8 over the parameter-matched plain"),
    ("rot4", "plain", "claim (1): equivariant rot4 over plain"),
    ("tl", "rot8", "claim (2): TL over the fixed equivariant rot8"),
    ("sa", "tl", "claim (3): SA over TL"),
    ("sa", "tl-cont", "claim (3): SA over TL trained as many steps"),
    ("rot4", "rot8", "claim (4): rot4 over rot8"),
    ("flip", "rot8", "claim (4): flip over rot8"),
    ("flip", "plain", "claim (4): flip over plain"),
]
TESTSETS = ["Set5", "Set14", "B100"]


def paired_interval(d: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean of ``d`` (``(S, I)``: seeds x images) and its ``level`` interval (module docstring).

    Returns ``mean``, ``low``, ``high``, ``se`` and ``df``. A constant ``d`` gives a zero-width interval.
    """
    d = np.asarray(d, dtype=float)
    if d.ndim == 1:
        d = d[None]
    s, n = d.shape
    if n < 2:
        raise ValueError("a paired interval needs at least two images")
    mean = float(d.mean())
    if s == 1:
        se = float(d.std(ddof=1) / math.sqrt(n))
        df = float(n - 1)
    else:
        row, col = d.mean(1, keepdims=True), d.mean(0, keepdims=True)
        ms_seed = n * float(((row - mean) ** 2).sum()) / (s - 1)
        ms_image = s * float(((col - mean) ** 2).sum()) / (n - 1)
        resid = d - row - col + mean
        df_res = (s - 1) * (n - 1)
        ms_res = float((resid**2).sum()) / df_res
        parts = [(ms_seed, s - 1), (ms_image, n - 1), (-ms_res, df_res)]
        var = max(sum(m for m, _ in parts), 0.0) / (s * n)
        if var <= 0 or (ms_seed <= 0 and ms_image <= 0):
            var = max(var, max(ms_seed, ms_image, ms_res) / (s * n))
        se = math.sqrt(var)
        denom = sum(m * m / k for m, k in parts if k > 0)
        df = (sum(m for m, _ in parts) ** 2 / denom) if denom > 0 else float(df_res)
        df = float(min(max(df, 1.0), s * n - 1))
    q = float(stats.t.ppf(0.5 + level / 2, df)) if se > 0 else 0.0
    return {"mean": mean, "low": mean - q * se, "high": mean + q * se, "se": se, "df": df}


# ---- tidy views of the results --------------------------------------------------------------------------------


def model_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The scored rows (not the ``data-eps`` rows)."""
    return frame[frame["model"] != "data-eps"].copy()


def eps_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The training photos' eps per group."""
    cols = ["eps_group", "eps", "eps_ci_low", "eps_ci_high", "eps_null_q95", "eps_p_adjusted", "eps_mesh"]
    return frame[frame["model"] == "data-eps"][cols].reset_index(drop=True)


def per_image(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, seed, test set, rotation, image) with ``psnr`` and ``ssim``."""
    out = []
    for r in model_rows(frame).itertuples():
        names, psnrs, ssims = json.loads(r.images), json.loads(r.psnr_per_image), json.loads(r.ssim_per_image)
        seed = -1 if r.model == "bicubic" or pd.isna(getattr(r, "seed", np.nan)) else int(r.seed)
        for name, p, q in zip(names, psnrs, ssims):
            out.append(
                {"model": r.model, "seed": seed, "testset": r.testset, "rotation": r.rotation, "image": name}
                | {"psnr": p, "ssim": q}
            )
    return pd.DataFrame(out)


def difference_matrix(images: pd.DataFrame, a: str, b: str, testset: str, rotation: str, metric: str = "psnr"):
    """``d[s, i] = A(s, i) - B(s, i)`` over the seeds both models have (a seedless model pairs with every seed)."""
    sub = images[(images["testset"] == testset) & (images["rotation"] == rotation)]
    wide_a = sub[sub["model"] == a].pivot(index="seed", columns="image", values=metric)
    wide_b = sub[sub["model"] == b].pivot(index="seed", columns="image", values=metric)
    if wide_a.empty or wide_b.empty:
        return None
    if list(wide_b.index) == [-1]:
        wide_b = pd.DataFrame(np.repeat(wide_b.values, len(wide_a), 0), index=wide_a.index, columns=wide_b.columns)
    if list(wide_a.index) == [-1]:
        wide_a = pd.DataFrame(np.repeat(wide_a.values, len(wide_b), 0), index=wide_b.index, columns=wide_a.columns)
    seeds = sorted(set(wide_a.index) & set(wide_b.index))
    cols = sorted(set(wide_a.columns) & set(wide_b.columns))
    if not seeds or len(cols) < 2:
        return None
    return wide_a.loc[seeds, cols].values - wide_b.loc[seeds, cols].values


def differences(frame: pd.DataFrame, comparisons=COMPARISONS, metric: str = "psnr") -> pd.DataFrame:
    """Every comparison's mean paired difference and 95% interval per test set and rotation."""
    images = per_image(frame)
    rows = []
    for a, b, label in comparisons:
        for (testset, rotation), _ in images.groupby(["testset", "rotation"], sort=False):
            d = difference_matrix(images, a, b, testset, rotation, metric)
            if d is None:
                continue
            ci = paired_interval(d)
            given = paired_interval(d.mean(0, keepdims=True))  # these trained networks: images only
            rows.append(
                {"a": a, "b": b, "claim": label, "testset": testset, "rotation": rotation}
                | {"n_seeds": d.shape[0], "n_images": d.shape[1], **ci}
                | {"images_low": given["low"], "images_high": given["high"]}
            )
    return pd.DataFrame(rows)


def rotation_change(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model and rotated test set: PSNR of the rotated copy minus the unrotated image, with a 95% interval.

    Image ``i`` of the rotated set is image ``i`` turned (``name@element``), so the pairs are by base name and
    seed; a model whose restoration does not depend on the image's orientation reads 0.
    """
    images = per_image(frame)
    images["base"] = images["image"].str.split("@").str[0]
    rows = []
    for (model, testset), sub in images.groupby(["model", "testset"], sort=False):
        turned = sub[sub["rotation"] != "none"]
        if turned.empty:
            continue
        upright = sub[sub["rotation"] == "none"].pivot(index="seed", columns="base", values="psnr")
        turned = turned.pivot(index="seed", columns="base", values="psnr")
        cols = sorted(set(upright.columns) & set(turned.columns))
        d = turned.loc[upright.index, cols].values - upright[cols].values
        rows.append({"model": model, "testset": testset, "n_seeds": d.shape[0], "n_images": d.shape[1]}
                    | paired_interval(d))  # fmt: skip
    return pd.DataFrame(rows)


def table(frame: pd.DataFrame) -> pd.DataFrame:
    """Seed-averaged scores per model: PSNR/SSIM per test set, rotated PSNR, parameters, FLOPs, equivariance error."""
    rows = model_rows(frame)
    out = []
    for model in [m for m in ORDER if m in set(rows["model"])]:
        sub = rows[rows["model"] == model]
        r: dict = {"model": model, "seeds": int(sub["seed"].nunique()) if model != "bicubic" else 0}
        for t in TESTSETS:
            plain = sub[(sub["testset"] == t) & (sub["rotation"] == "none")]
            rot = sub[(sub["testset"] == t) & (sub["rotation"] != "none")]
            r[f"{t} PSNR"] = plain["psnr"].mean()
            r[f"{t} SSIM"] = plain["ssim"].mean()
            r[f"{t} rot PSNR"] = rot["psnr"].mean() if len(rot) else math.nan
        for col in ("params", "flops", "steps", "train_seconds", "eq_rot8", "eq_quarter", "eq_flip", "eq_res_rot8",
                    "eq_res_quarter", "eq_res_flip"):  # fmt: skip
            r[col] = sub[col].mean() if col in sub else math.nan
        out.append(r)
    return pd.DataFrame(out)


def _fmt(x: float, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown_table(frame: pd.DataFrame) -> str:
    """The paper-style table (rows: models incl. bicubic)."""
    t = table(frame)
    head = "| model | " + " | ".join(f"{s} PSNR / SSIM" for s in TESTSETS)
    head += " | " + " | ".join(f"{s} rot. PSNR" for s in TESTSETS)
    head += " | params | GFLOPs (64x64 LR) | steps | equiv. err. rot8 / 90° / flip | same, of f - bicubic |"
    lines = [head, "|---|" + "---:|" * (2 * len(TESTSETS) + 5)]
    for r in t.to_dict("records"):
        cells = [f"{_fmt(r[f'{s} PSNR'], '.2f')} / {_fmt(r[f'{s} SSIM'], '.4f')}" for s in TESTSETS]
        cells += [_fmt(r[f"{s} rot PSNR"], ".2f") for s in TESTSETS]
        cells += [f"{int(r['params']):,}", _fmt(r["flops"] / 1e9, ".2f"), f"{int(r['steps'])}"]
        cells += [" / ".join(_fmt(r[c], ".1e") for c in ("eq_rot8", "eq_quarter", "eq_flip"))]
        cells += [" / ".join(_fmt(r[c], ".2f") for c in ("eq_res_rot8", "eq_res_quarter", "eq_res_flip"))]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_differences(frame: pd.DataFrame) -> str:
    """Paired PSNR differences (dB) with 95% intervals, one row per comparison, columns per test set/rotation."""
    return markdown_differences_metric(frame, "psnr")


def markdown_differences_metric(frame: pd.DataFrame, metric: str, images_only: bool = False) -> str:
    """Paired ``metric`` differences with 95% intervals, one row per comparison, columns per test set/rotation.

    ``images_only``: the interval over images of the seed-averaged difference (these trained networks, seeds
    held fixed) instead of the one over seeds and images.
    """
    d = differences(frame, metric=metric)
    if images_only:
        d["low"], d["high"] = d["images_low"], d["images_high"]
    digits = 3 if metric == "psnr" else 4
    if d.empty:
        return ""
    d["col"] = d["testset"] + d["rotation"].map(lambda r: "" if r == "none" else " rot.")
    cols = list(dict.fromkeys(d["col"]))
    lines = ["| comparison (A - B) | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for label, sub in d.groupby("claim", sort=False):
        by = sub.set_index("col")
        cells = [
            f"{by.loc[c, 'mean']:+.{digits}f} [{by.loc[c, 'low']:+.{digits}f}, {by.loc[c, 'high']:+.{digits}f}]"
            if c in by.index
            else "-"
            for c in cols
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_rotation(frame: pd.DataFrame) -> str:
    """Rotated minus upright PSNR per model (dB, 95% intervals)."""
    d = rotation_change(frame)
    if d.empty:
        return ""
    sets = list(dict.fromkeys(d["testset"]))
    lines = ["| model | " + " | ".join(f"{t}: rotated - upright" for t in sets) + " |", "|---|" + "---:|" * len(sets)]
    for model in [m for m in ORDER if m in set(d["model"])]:
        by = d[d["model"] == model].set_index("testset")
        cells = [f"{by.loc[t, 'mean']:+.3f} [{by.loc[t, 'low']:+.3f}, {by.loc[t, 'high']:+.3f}]" for t in sets]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_eps(frame: pd.DataFrame) -> str:
    e = eps_rows(frame)
    lines = ["| group | eps (worst element) | 95% interval | null q95 | adjusted p |", "|---|---:|---:|---:|---:|"]
    for r in e.itertuples():
        lines.append(
            f"| {r.eps_group} | {r.eps:.2e} | [{r.eps_ci_low:.2e}, {r.eps_ci_high:.2e}] | {r.eps_null_q95:.2e} "
            f"| {r.eps_p_adjusted:.3f} |"
        )
    return "\n".join(lines)


def _word(ci: dict | pd.Series) -> str:
    if ci["low"] > 0:
        return "held"
    if ci["high"] < 0:
        return "not held (the reverse is resolved)"
    return "not resolved at this scale"


def verdict_text(frame: pd.DataFrame) -> str:
    """One clause per comparison on B100 (unrotated), the largest test set: mean difference, interval, word."""
    d = differences(frame)
    if d.empty:
        return "no paired comparison available"
    d = d[(d["testset"] == "B100") & (d["rotation"] == "none")]
    parts = [
        f"{r['a']} - {r['b']} on B100 {r['mean']:+.3f} dB [{r['low']:+.3f}, {r['high']:+.3f}]: {_word(r)}"
        for _, r in d.iterrows()
    ]
    return "; ".join(parts)


def gain_figure(frame: pd.DataFrame, reference: str = "plain"):
    """Per-image PSNR gain over ``reference`` (seed-averaged), per model and test set (unrotated): seaborn."""
    import seaborn as sns

    images = per_image(frame)
    images = images[images["rotation"] == "none"]
    mean = images.groupby(["model", "testset", "image"], as_index=False)["psnr"].mean()
    ref = mean[mean["model"] == reference].set_index(["testset", "image"])["psnr"]
    mean = mean[~mean["model"].isin([reference, "bicubic"])].copy()  # bicubic (about -1 dB) is in the table
    mean["gain"] = mean["psnr"].values - ref.reindex(list(zip(mean["testset"], mean["image"]))).values
    order = [m for m in ORDER if m in set(mean["model"])]
    fig, axes = subplots(1, 1, width=6.0)
    ax = axes[0, 0]
    np.random.seed(0)  # the strip plot's jitter
    hue = [t for t in TESTSETS if t in set(mean["testset"])]
    box = dict(x="model", y="gain", hue="testset", order=order, hue_order=hue, ax=ax)
    sns.boxplot(mean, **box, fliersize=0, linewidth=0.6)
    sns.stripplot(mean, **box, dodge=True, size=1.5, alpha=0.5, legend=False)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel(f"PSNR gain over {reference}\n(dB, Y; per image, mean of 3 seeds)")
    ax.set_xlabel("")
    ax.set_title("x2 SR: per-image gains on Set5, Set14, B100")
    fig.tight_layout()
    return fig


def main(argv=None) -> int:
    """``python -m experiments.sr_benchmark_stats [RESULTS_CSV]``: print the report's tables (markdown)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    frame = pd.read_csv(args[0]) if args else read_results("sr_benchmark", "quick")
    for title, text in (
        ("Table", markdown_table(frame)),
        ("Paired PSNR differences (dB, 95% intervals over seeds and images)", markdown_differences(frame)),
        (
            "Paired PSNR differences, these networks (seeds fixed, images only)",
            markdown_differences_metric(frame, "psnr", images_only=True),
        ),
        ("Paired SSIM differences", markdown_differences_metric(frame, "ssim")),
        ("Rotated minus upright", markdown_rotation(frame)),
        ("Training photos' eps", markdown_eps(frame)),
        ("Verdict", verdict_text(frame)),
    ):
        print(f"### {title}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
