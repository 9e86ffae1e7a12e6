"""``symmetry_power``: how often the symmetry test rejects on subsets of natural photographs (issues 11, 20).

Random subsets of ``images`` photographs of a source (Rain100L clean test or training photos, B100 HR photos;
:data:`SOURCES`) are measured for the groups ``rot4,flip,flipud`` in one run (one threshold per group, Holm over the
groups) at several settings (the aggregated default test, presets, single kernels, or the classifier two-sample
test of :mod:`benchmarks.classifier`); a group counts as rejected when its verdict is *not symmetric* at ``alpha``.
Photographs are up-down asymmetric (sky above, ground below) and left-right symmetric, so flipud and rot4 should be
rejected and flip not. One control per setting measures the same subsets made exactly dih4-invariant (each photo
moved by a random element of dih4): its rejection rate is the test's size, which an exact null keeps at ``alpha``.

The subsets are drawn from the named stream ``split`` of ``seed`` (:mod:`symmetry.streams`), one draw per subset
index; ``role`` says why a seed is there: ``select`` (the draws a recommended setting was chosen on) or
``evaluate`` (fresh draws, reported) or ``diagnose`` (draws added after a verdict to examine it; not in the
verdict). Each cell is one (setting, sample, subset), so a run resumes subset by
subset. The data come from the data root (``--data-root``, ``$SYMMETRY_DATA`` or ``../shared/data``); without it
every cell is skipped with one message.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

import symmetry
from benchmarks.classifier import classifier_test
from experiments.runner import Context, SkipCell
from experiments.style import subplots
from symmetry.datasets import load_dataset
from symmetry.errors import DataError
from symmetry.estimators import holm
from symmetry.groups import get_group
from symmetry.settings import preset_options
from symmetry.sources import ImageSource
from symmetry.streams import rng
from symmetry.transforms import transform_image

GROUPS = ("rot4", "flip", "flipud")
EXPECTED = {"rot4": True, "flipud": True, "flip": False}  # photographs: rejected (True) or not
_IMAGES: dict = {}  # (data root, split) -> decoded photographs, kept between cells
_SOURCES_KEPT = 3  # photo sources kept decoded (Rain100L train 200 and B100 100 gray photos: about 0.4 GB)


# --------------------------------------------------------------------------- cells


def cells(config: dict) -> list[dict]:
    """One cell per (setting, sample, subset); a setting is a table of measure_dataset options (``preset`` allowed)."""

    out = []
    for name, given in config["settings"].items():
        options = {**preset_options(given.get("preset")), **given}  # the hash follows the preset's content
        sizes = options.pop("only_images", None)  # measure this setting only on subsets of these sizes
        most = options.pop("max_subsets", None)  # and on at most this many subsets per sample
        options["mesh"] = [float(h) for h in options["mesh"]] if "mesh" in options else None
        for sample in config["samples"]:
            if sizes is not None and int(sample.get("images", config["images"])) not in sizes:
                continue
            count = int(sample["subsets"]) if most is None else min(int(most), int(sample["subsets"]))
            for subset in range(count):
                for symmetrised, family in _variants(name, config):
                    if symmetrised and not sample.get("controls", True):
                        continue
                    out.append(
                        {
                            "setting": name,
                            "options": dict(options),
                            "split": sample["split"],
                            "role": sample["role"],
                            "seed": int(sample["seed"]),
                            "subset": subset,
                            "images": int(sample.get("images", config["images"])),
                            "symmetrised": symmetrised,
                            "family": family,
                            "groups": ",".join(config.get("groups", GROUPS)),
                            "permutations": int(config["permutations"]),
                            "alpha": float(config["alpha"]),
                        }
                    )
    # subset by subset (a partial run covers every setting and sample), the slow classifier test last
    out.sort(key=lambda c: (bool(c["options"].get("classifier")), c["subset"]))
    return out


def _variants(name: str, config: dict) -> list[tuple[bool, str]]:
    """(symmetrised, family) pairs of a setting: ``joint`` (all groups in one run, one Holm family) always,
    ``separate`` (one run per group) for ``config["separate"]``, each also symmetrised for ``config["controls"]``."""
    families = ["joint"] + (["separate"] if name in config.get("separate", []) else [])
    return [(False, f) for f in families] + [(True, f) for f in families if name in config.get("controls", [])]


SOURCES = {  # photo collections under the data root: (what it is, relative path, dataset spec or None for Rain100L)
    "rain100l:test": ("Rain100L test clean photos (BSD)", "rain100l", None),
    "rain100l:train": ("Rain100L train clean photos (BSD)", "rain100l", None),
    "b100": ("B100 HR photos (BSD100)", "sr_benchmarks/B100/HR", "folder"),
}


def photo_sources(ctx: Context, source: str) -> list:
    """The photographs of ``source`` (a :data:`SOURCES` key; a bare Rain100L split name means ``rain100l:SPLIT``) as
    in-memory sources, decoded once per process (the last :data:`_SOURCES_KEPT` sources are kept: the calibration
    alternates two); SkipCell when the data are absent."""

    source = source if source in SOURCES else f"rain100l:{source}"
    if source not in SOURCES:
        raise ValueError(f"unknown photo source {source!r}; choose one of {', '.join(SOURCES)}")
    what, relative, kind = SOURCES[source]
    if not ctx.data_available(relative):
        raise SkipCell(
            f"{what} not under the data root ({ctx.data_root}); pass --data-root DIR with DIR/{relative} "
            "(or set $SYMMETRY_DATA) to measure on real photographs"
        )
    key = (str(ctx.data_root), source)
    if key not in _IMAGES:
        try:
            if kind == "folder":
                dataset = load_dataset(f"folder:{ctx.data_root / relative}")
            else:
                dataset = load_dataset("rain100l", data_root=ctx.data_root, split=source.split(":")[1])
        except DataError as why:
            raise SkipCell(f"{what} not readable under {ctx.data_root}: {why}") from None
        while len(_IMAGES) >= _SOURCES_KEPT:
            _IMAGES.pop(next(iter(_IMAGES)))
        _IMAGES[key] = [ImageSource(src.name, array=src.load()) for src in dataset]
    return _IMAGES[key]


def subset_indices(total: int, size: int, seed: int, subset: int) -> np.ndarray:
    """The photographs of subset ``subset``: ``size`` distinct indices from stream ``split`` of ``(seed, subset)``."""

    if size > total:
        raise ValueError(f"subsets of {size} images need at least {size} photographs, the split has {total}")
    return np.sort(rng(seed, "split", subset).choice(total, size, replace=False))


def symmetrise(sources: list, seed: int, subset: int) -> list:
    """Each photograph moved by a uniformly random element of dih4 (a random quarter turn, randomly flipped):
    an exactly dih4-invariant law (:func:`symmetry.transforms.transform_image`, exact pixel permutations)."""

    dih4 = get_group("dih4")
    draws = rng(seed, "split", subset, 1).integers(len(dih4), size=len(sources))
    return [
        ImageSource(src.name, array=transform_image(src.array, dih4[int(k)])[0].contiguous())
        for src, k in zip(sources, draws)
    ]


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Measure one subset for the groups at one setting; one row per group with its adjusted p and verdict.

    A setting with ``classifier = true`` runs :func:`benchmarks.classifier.classifier_test` (``steps`` Adam steps)
    once per group instead; its exact binomial p-values are Holm-adjusted over the groups like the estimator's.
    """

    photos = photo_sources(ctx, cell["split"])
    chosen = [photos[i] for i in subset_indices(len(photos), cell["images"], cell["seed"], cell["subset"])]
    if cell["symmetrised"]:
        chosen = symmetrise(chosen, cell["seed"], cell["subset"])
    if cell["options"].get("classifier"):
        return _classifier_rows(chosen, cell)
    options = {k: v for k, v in cell["options"].items() if k != "preset"}
    mesh = options.pop("mesh", None)
    runs = [cell["groups"]] if cell["family"] == "joint" else cell["groups"].split(",")
    rows = []
    for groups in runs:
        report = symmetry.measure_dataset(
            chosen,
            groups,
            mesh,
            seed=cell["seed"] * 1000 + cell["subset"],
            permutations=cell["permutations"],
            bootstrap=0,
            alpha=cell["alpha"],
            device=ctx.device,
            **options,
        )
        for v in report.verdicts:
            worst = report.summary("worst", v["group"]).iloc[-1]
            rows.append(
                {
                    "group": v["group"],
                    "p_adjusted": v["p_adjusted"],
                    "rejected": v["symmetric"] is False,
                    "symmetry_error": float(worst["symmetry_error"]),
                    "null_q95": float(worst["null_q95"]),
                    "p_floor": report.meta["p_floor"],
                    "tests": report.meta["tests"],
                    "measure_seconds": report.meta["seconds"],
                }
            )
    return rows


def _classifier_rows(chosen: list, cell: dict) -> list[dict]:
    """The classifier two-sample test of each group on the subset (Holm over the groups)."""

    groups = cell["groups"].split(",")
    seed = cell["seed"] * 1000 + cell["subset"]
    steps = int(cell["options"].get("steps", 300))
    results = [classifier_test([s.array for s in chosen], g, steps=steps, seed=seed) for g in groups]
    adjusted = holm([r["p_value"] for r in results])
    return [
        {
            "group": g,
            "p_adjusted": float(a),
            "rejected": bool(a < cell["alpha"]),
            "p_value": r["p_value"],
            "accuracy": r["accuracy"],
            "train_loss": r["train_loss"],
            "measure_seconds": r["seconds"],
        }
        for g, r, a in zip(groups, results, adjusted)
    ]


# --------------------------------------------------------------------------- tables and figures


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``."""
    from scipy.stats import norm

    if n == 0:
        return math.nan, math.nan
    z = norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)  # exactly 0 and 1 at the ends (not 5.6e-17 by rounding)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def rates(frame: pd.DataFrame) -> pd.DataFrame:
    """Rejections per (setting, family, split, images, role, symmetrised, group): count, subsets, rate, Wilson."""
    keys = ["setting", "family", "split", "images", "role", "symmetrised", "group"]
    out = []
    for key, sub in frame.groupby(keys, sort=False):
        k, n = int(sub["rejected"].astype(bool).sum()), len(sub)
        lo, hi = wilson(k, n)
        out.append({**dict(zip(keys, key)), "rejected": k, "subsets": n, "rate": k / n, "low": lo, "high": hi})
    return pd.DataFrame(out)


def _label(row) -> str:
    return f"{row['split']}, {row['images']} photos ({row['role']})" + (
        ", dih4-symmetrised" if row["symmetrised"] else ""
    )


def _variant(row) -> str:
    return row["setting"] if row["family"] == "joint" else f"{row['setting']}, groups apart"


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """Rejection rate with its 95% Wilson interval per group and setting, one panel per sample."""
    import seaborn as sns

    table = rates(frame)
    table["sample"] = [_label(r) for _, r in table.iterrows()]
    table["variant"] = [_variant(r) for _, r in table.iterrows()]
    samples = list(dict.fromkeys(table["sample"]))
    variants = list(dict.fromkeys(table["variant"]))
    groups = [g for g in config.get("groups", GROUPS) if g in set(table["group"])]
    fig, axes = subplots(min(2, len(samples)), math.ceil(len(samples) / 2), width=0.8 * len(variants) + 1.8, height=3.4)
    colors = dict(zip(groups, sns.color_palette(n_colors=len(groups))))
    width = 0.8 / max(1, len(groups))
    for ax, sample in zip(axes.flat, samples):
        sub = table[table["sample"] == sample]
        for j, group in enumerate(groups):
            part = sub[sub["group"] == group].set_index("variant").reindex(variants)
            x = np.arange(len(variants)) + (j - (len(groups) - 1) / 2) * width
            ax.bar(x, part["rate"], width, color=colors[group], alpha=0.8, label=group)
            err = np.clip(np.vstack([part["rate"] - part["low"], part["high"] - part["rate"]]), 0, None)
            ax.errorbar(x, part["rate"], yerr=err, fmt="none", ecolor="0.2", capsize=2, lw=1)
        ax.axhline(0.8, color="0.3", ls="--", lw=0.8)
        ax.axhline(config["alpha"], color="0.3", ls=":", lw=0.8)
        ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{sample}: {int(sub['subsets'].max())} subsets", fontsize=9)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"rejected at alpha {config['alpha']:g} (Holm)")
    for ax in list(axes.flat)[len(samples) :]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.suptitle("Power on photo subsets (bar: rejection rate; whiskers: 95% Wilson; dashed 0.8; dotted alpha)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.legend(handles[: len(groups)], names[: len(groups)], ncol=len(groups), loc="upper right", fontsize=8)
    return {"rejections": fig}


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """The recommended setting's rejections on the evaluation draws, against the issue's targets (>= 80%, <= 10%)."""
    table = rates(frame)
    best = config.get("recommended", "photos")
    table = table[(table["setting"] == best) & (table["role"] == "evaluate")]
    if "target_images" in config:  # the target is stated for subsets of this size
        table = table[table["images"] == int(config["target_images"])]
    parts = []
    for key, sub in table.groupby(["split", "symmetrised", "family"], sort=False):
        counts = ", ".join(f"{r['group']} {r['rejected']}/{r['subsets']}" for _, r in sub.iterrows())
        parts.append(f"{_label(sub.iloc[0])} {key[2]}: {counts}")
    plain = table[(table["family"] == "joint") & ~table["symmetrised"].astype(bool)]
    met = not plain.empty and all(
        (r["rate"] >= 0.8) if EXPECTED[r["group"]] else (r["rate"] <= 0.1)
        for _, r in plain.iterrows()
        if r["group"] in EXPECTED
    )
    target = "met" if met else "NOT met"
    return f"{best}: " + "; ".join(parts) + f" (target, joint runs: flipud and rot4 >= 80%, flip <= 10%: {target})"
