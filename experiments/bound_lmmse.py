"""``bound_lmmse``: a proxy test of Theorem 3.6 with the LMMSE denoiser, interpolated transforms and noisy data.

What it does and does not test. It measures how the equivariance error of an *optimal* linear operator scales with
the mesh size h and a covariance symmetry error, for noisy observations and the project's bicubic array transform.
It is *not* the theorem's setting (that is experiment ``bound``, ``experiments/bound_theorem.py``): the transform of
an array is interpolation, not exact sampling of the transformed continuous image, so interpolation and noise
aliasing enter the error; the operator is the LMMSE estimator of a noise model, not the optimum of the blur data
term plus a regulariser with mu-quadratic growth; the constants ``a``, ``b`` are fitted to the measurements (on a
checkerboard half), not computed from the theorem's closed forms (SM5.52), so "bounded" here means "under a fitted
envelope".

Data: :mod:`symmetry.synthetic` fields of one family (``vonmises`` by default: ``kappa = 0`` is isotropic, larger
``kappa`` orients the atoms more), whose window covariance is known exactly (:class:`theory.optimal.FieldLaw`).
The optimum is the LMMSE denoiser/deblurrer of a disk window built from that covariance
(:func:`theory.optimal.optimal_operator`), and its equivariance error is the exact expectation
``e_A(h) = E||W pi~_A y - pi~_A W y||^2 / E||pi~_A W y||^2`` on a central disk, worst over the non-identity
elements of the group, with ``pi~_A`` the project's bicubic transform. Three kinds of cells:

- ``optimal``: one (kappa, h): ``e_A(h)`` per element, split into the part due to the clean signal and the part
  due to the noise, and the covariance symmetry error ``eps_cov(A) = ||C - C o A^-1||^2 / ||C||^2``;
- ``mmd``: one kappa: the project's kernel-MMD symmetry error ``eps_G`` (:func:`symmetry.measure`, mesh 1,
  analytic transforms, so no interpolation error), the second definition of ``eps`` reported beside ``eps_cov``;
- ``trained``: one (kappa, h): a convolution learned by least squares from noisy/clean rasters (the empirical
  risk minimiser, a finite-data approximation of the optimum) and the optimal convolution with the same support,
  both scored by :func:`analysis.equivariance.equivariance_error` on held-out noisy rasters.

``eps`` on every x-axis is ``eps_cov`` (worst over the group). The bound ``a h^2 + b eps`` is fitted by
non-negative least squares on relative residuals (:func:`theory.optimal.fit_bound`) on half the (kappa, h) grid
(a checkerboard) and checked on the other half; the tightest envelope on the training half
(:func:`theory.optimal.envelope_bound`) is checked the same way. The slope in ``h`` is fitted on the isotropic
rows (``eps = 0`` exactly).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from analysis.equivariance import DEFAULT_MARGIN, equivariance_error
from experiments.bound_theorem import mesh_ticks
from experiments.runner import Context
from experiments.style import MODEL_COLORS, PALETTE, subplots
from symmetry.measurement import measure_dataset
from symmetry.synthetic import make_fields
from theory.optimal import (
    FieldLaw,
    Restoration,
    envelope_bound,
    fit_bound,
    fit_linear_convolution,
    lattice_disk,
    loglog_slope,
    optimal_equivariance_error,
    symmetry_errors,
    wiener_convolution,
)

LAW_KEYS = ("family", "mu", "k", "long", "short", "atoms", "size")
PROBLEM_KEYS = ("radius", "eval_radius", "noise", "noise_model", "blur", "group", "interpolation")


def _law(cell: dict):
    return FieldLaw(kappa=float(cell["kappa"]), **{k: cell[k] for k in LAW_KEYS})


def cells(config: dict) -> list[dict]:
    """``optimal`` cells over (kappa, mesh), ``mmd`` cells over kappa, ``trained`` cells over (kappa, trained mesh)."""
    law = {k: config[k] for k in LAW_KEYS}
    problem = {k: config[k] for k in PROBLEM_KEYS}
    out = []
    for kappa in config["kappas"]:
        for mesh in config["meshes"]:
            out.append({"kind": "optimal", **law, "kappa": kappa, "mesh": mesh, **problem})
    for kappa in config["kappas"] if config.get("mmd_images", 0) else []:
        out.append(
            {
                "kind": "mmd",
                **law,
                "kappa": kappa,
                "group": config["group"],
                "radius": config["radius"],
                "images": config["mmd_images"],
                "seed": config["seed"],
            }
        )
    for kappa in config.get("trained_kappas", []):
        for mesh in config["trained_meshes"]:
            out.append(
                {
                    "kind": "trained",
                    **law,
                    "kappa": kappa,
                    "mesh": mesh,
                    **problem,
                    "conv_radius": config["conv_radius"],
                    "image_size": config["image_size"],
                    "train_images": config["train_images"],
                    "test_images": config["test_images"],
                    "samples": config["samples"],
                    "seed": config["seed"],
                }
            )
    return out


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """Compute one cell's rows (one per group element, or per element and model)."""
    return {"optimal": _run_optimal, "mmd": _run_mmd, "trained": _run_trained}[cell["kind"]](cell)


def _problem(cell: dict, law=None):
    return Restoration(
        law or _law(cell),
        float(cell["mesh"]),
        radius=float(cell["radius"]),
        eval_radius=float(cell["eval_radius"]),
        noise=float(cell["noise"]),
        noise_model=cell["noise_model"],
        blur=float(cell["blur"]),
        interpolation=cell["interpolation"],
    )


def _run_optimal(cell: dict) -> list[dict]:
    problem = _problem(cell)
    eps = symmetry_errors(problem.law, cell["group"], problem.radius, beta=0.0)
    rows = optimal_equivariance_error(problem, cell["group"])
    for row in rows:
        row["symmetry_error"] = eps[row["element"]]
    return rows


def _run_mmd(cell: dict) -> list[dict]:
    law = _law(cell)
    report = measure_dataset(
        law.spec(n=int(cell["images"]), seed=int(cell["seed"])),
        cell["group"],
        mesh=1.0,
        exact=True,
        radius=float(cell["radius"]),
        seed=int(cell["seed"]),
        device="cpu",
    )
    frame = report.to_frame()
    rows = []
    for r in frame.itertuples():
        element = r.statistic if r.statistic in ("worst", "mean") else r.statistic
        rows.append(
            {
                "element": element,
                "symmetry_error_mmd": float(r.symmetry_error),
                "null_q95": float(r.null_q95),
                "p_value": float(r.p_value),
            }
        )
    return rows


def _rasters(cell: dict, split: str, count: int):
    """Clean rasters ``(N, 1, n, n)`` of ``count`` fields at the cell's mesh and their noisy copies."""
    law = _raster_law(cell)
    params = {**law.synthetic_params(), "n": count, "seed": int(cell["seed"])}
    fields = make_fields(law.family, split=split, **params)
    clean = torch.stack([f.at_mesh(float(cell["mesh"])) for f in fields])
    g = torch.Generator().manual_seed(int(cell["seed"]) * 7919 + (0 if split == "train" else 1))
    noisy = clean + _problem(cell, law).noise_sigma * torch.randn(clean.shape, generator=g, dtype=clean.dtype)
    return noisy, clean


def _run_trained(cell: dict) -> list[dict]:
    problem = _problem(cell, _raster_law(cell))  # the rasters' frame sets the atom density, hence C(0)
    index = lattice_disk(float(cell["conv_radius"]), problem.mesh)
    x_train, y_train = _rasters(cell, "train", int(cell["train_images"]))
    x_test, y_test = _rasters(cell, "test", int(cell["test_images"]))
    g = torch.Generator().manual_seed(int(cell["seed"]))
    models = {
        "learned": fit_linear_convolution(x_train, y_train, index, int(cell["samples"]), g),
        "wiener": wiener_convolution(problem, float(cell["conv_radius"])),
    }
    margin = DEFAULT_MARGIN[problem.interpolation] + int(index.abs().max()) + 1
    rows = []
    for name, model in models.items():
        with torch.no_grad():
            mse = float(((model(x_test) - y_test) ** 2).mean() / problem.law.variance)
        frame = equivariance_error(model, x_test, cell["group"], interpolation=problem.interpolation, margin=margin)
        for r in frame[frame["element"] != "e"].itertuples():
            rows.append(
                {
                    "model": name,
                    "element": r.element,
                    "angle": r.angle,
                    "is_grid_exact": r.is_grid_exact,
                    "equivariance_error": r.equivariance_error,
                    "mse": mse,
                    "n_images": r.n_images,
                    "kernel_taps": len(index),
                }
            )
    return rows


def _raster_law(cell: dict):
    law = {k: cell[k] for k in LAW_KEYS}
    return FieldLaw(kappa=float(cell["kappa"]), **{**law, "size": float(cell["image_size"])})


# ---- analysis ---------------------------------------------------------------------------


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Worst element per (kappa, mesh) of the ``optimal`` cells: ``h, kappa, eps, error``, parts and ``train``."""
    opt = frame[frame["kind"] == "optimal"].copy()
    opt["mesh"] = opt["mesh"].astype(float)
    opt["kappa"] = opt["kappa"].astype(float)
    idx = opt.groupby(["kappa", "mesh"])["equivariance_error"].idxmax()
    worst = opt.loc[idx, ["kappa", "mesh", "element", "equivariance_error", "error_signal", "error_noise", "mse"]]
    eps = opt.groupby(["kappa", "mesh"])["symmetry_error"].max().rename("eps")
    out = worst.set_index(["kappa", "mesh"]).join(eps).reset_index()
    kappas = sorted(out["kappa"].unique())
    meshes = sorted(out["mesh"].unique(), reverse=True)
    out["train"] = [
        (kappas.index(k) + meshes.index(h)) % 2 == 0 for k, h in zip(out["kappa"], out["mesh"], strict=True)
    ]
    mmd = frame[(frame["kind"] == "mmd") & (frame["element"] == "worst")]
    if len(mmd):
        out = out.merge(
            mmd.assign(kappa=mmd["kappa"].astype(float))[["kappa", "symmetry_error_mmd", "null_q95"]],
            on="kappa",
            how="left",
        )
    return out.sort_values(["kappa", "mesh"], ascending=[True, False]).reset_index(drop=True)


def analyse(frame: pd.DataFrame, config: dict) -> dict:
    """Fits behind the figures and the verdict (see the module docstring)."""
    s = summary(frame)
    train, held = s[s["train"]], s[~s["train"]]
    a, b = fit_bound(train["mesh"], train["eps"], train["equivariance_error"])
    ea, eb = envelope_bound(train["mesh"], train["eps"], train["equivariance_error"])
    s["fit"] = a * s["mesh"] ** 2 + b * s["eps"]
    s["envelope"] = ea * s["mesh"] ** 2 + eb * s["eps"]
    held = s[~s["train"]]
    iso = s[s["eps"] <= config.get("negligible_eps", 0.0)]
    iso = iso[iso["mesh"] <= config.get("slope_max_mesh", math.inf)]
    slope = loglog_slope(iso["mesh"], iso["equivariance_error"])[0] if iso["mesh"].nunique() >= 2 else math.nan
    parts = {
        part: loglog_slope(iso["mesh"], iso[part])[0] if iso["mesh"].nunique() >= 2 else math.nan
        for part in ("error_signal", "error_noise")
    }
    # linearity in eps at fixed h: R^2 of error = c0 + c1 eps over kappa, per mesh
    r2 = {}
    for h, sub in s.groupby("mesh"):
        if sub["eps"].nunique() >= 3:
            coef = np.polyfit(sub["eps"], sub["equivariance_error"], 1)
            pred = np.polyval(coef, sub["eps"])
            ss = ((sub["equivariance_error"] - sub["equivariance_error"].mean()) ** 2).sum()
            r2[float(h)] = float(1 - ((sub["equivariance_error"] - pred) ** 2).sum() / ss) if ss > 0 else math.nan
    return {
        "summary": s,
        "a": a,
        "b": b,
        "envelope_a": ea,
        "envelope_b": eb,
        "held_bounded": float((held["equivariance_error"] <= held["fit"]).mean()),
        "held_max_ratio": float((held["equivariance_error"] / held["fit"]).max()),
        "held_bounded_envelope": float((held["equivariance_error"] <= held["envelope"] * (1 + 1e-9)).mean()),
        "held_max_ratio_envelope": float((held["equivariance_error"] / held["envelope"]).max()),
        "n_held": len(held),
        "slope": slope,
        "slope_parts": parts,
        "slope_range": (float(iso["mesh"].min()), float(iso["mesh"].max())) if len(iso) else (math.nan, math.nan),
        "eps_r2": r2,
    }


def trained_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Worst element per (model, kappa, mesh) of the ``trained`` cells, with test MSE."""
    t = frame[frame["kind"] == "trained"].copy()
    if t.empty:
        return t
    t["mesh"], t["kappa"] = t["mesh"].astype(float), t["kappa"].astype(float)
    g = t.groupby(["model", "kappa", "mesh"])
    return g.agg(equivariance_error=("equivariance_error", "max"), mse=("mse", "first")).reset_index()


# ---- figures and verdict ------------------------------------------------------------------


def _mesh_axis(ax, meshes) -> None:
    mesh_ticks(ax, meshes, "mesh size h (native px)")


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """``loglog`` (error vs h per eps), ``eps`` (error vs eps at fixed h), ``fit`` (measured vs fitted), ``trained``."""
    res = analyse(frame, config)
    s = res["summary"]
    kappas = sorted(s["kappa"].unique())
    colour = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(kappas)}
    grid = np.geomspace(s["mesh"].min(), s["mesh"].max(), 50)
    group = config["group"]
    out = {}

    fig, axes = subplots(2, 1, width=4.2, height=3.7)
    ax = axes[0, 0]
    negligible = float(config.get("negligible_eps", 0.0))
    for k in kappas:
        sub = s[s["kappa"] == k]
        eps = float(sub["eps"].iloc[0])
        eps = 0.0 if eps <= negligible else eps
        label = f"kappa={k:g}, eps={eps:.1e}" if eps else f"kappa={k:g}, eps=0"
        ax.loglog(sub["mesh"], sub["equivariance_error"], "-", color=colour[k], alpha=0.35)
        tr, ho = sub[sub["train"]], sub[~sub["train"]]
        ax.loglog(tr["mesh"], tr["equivariance_error"], "o", color=colour[k], label=label)
        ax.loglog(ho["mesh"], ho["equivariance_error"], "o", mfc="none", color=colour[k])
        ax.loglog(grid, res["a"] * grid**2 + res["b"] * eps, "--", color=colour[k], lw=1)
        if eps > 0:
            ax.axhline(res["b"] * eps, color=colour[k], ls=":", lw=0.8)
    iso = s[s["eps"] == s["eps"].min()].sort_values("mesh")
    h0, e0 = float(iso["mesh"].iloc[-1]), float(iso["equivariance_error"].iloc[-1])
    ax.loglog(grid, e0 * (grid / h0) ** 2, color="0.4", lw=2, alpha=0.5, label="slope 2 reference")
    _mesh_axis(ax, s["mesh"])
    ax.set_ylabel(f"equivariance error, worst over {group}")
    ax.set_title(
        "Optimal (LMMSE) operator (filled: fit half, open: held out)\ndashed: fitted a h^2 + b eps, dotted: b eps"
    )
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)
    ax = axes[0, 1]
    ax.loglog(iso["mesh"], iso["equivariance_error"], "o-", color="k", label="total")
    ax.loglog(iso["mesh"], iso["error_noise"], "s--", color=PALETTE[3], label="from the noise")
    ax.loglog(iso["mesh"], iso["error_signal"], "^--", color=PALETTE[2], label="from the clean signal")
    ax.loglog(grid, e0 * (grid / h0) ** 2, color="0.4", lw=2, alpha=0.5, label="slope 2")
    _mesh_axis(ax, s["mesh"])
    ax.set_ylabel("equivariance error (eps = 0)")
    sp = res["slope_parts"]
    ax.set_title(
        f"eps = 0: slope {res['slope']:.2f} (noise part {sp['error_noise']:.2f}, signal {sp['error_signal']:.2f})"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2)
    fig.tight_layout()
    out["loglog"] = fig

    fig, axes = subplots(2, 1, width=3.6, height=3.0)
    ax = axes[0, 0]
    meshes = sorted(s["mesh"].unique())
    shown = [meshes[0], meshes[len(meshes) // 2], meshes[-1]]
    for i, h in enumerate(shown):
        sub = s[s["mesh"] == h].sort_values("eps")
        ax.plot(sub["eps"], sub["equivariance_error"], "o", color=PALETTE[i], label=f"h={h:g}")
        coef = np.polyfit(sub["eps"], sub["equivariance_error"], 1)
        xs = np.linspace(0, sub["eps"].max(), 20)
        r2 = res["eps_r2"].get(float(h), math.nan)
        ax.plot(xs, np.polyval(coef, xs), "-", color=PALETTE[i], lw=1, label=f"linear fit, R^2={r2:.3f}")
    ax.set_xlabel("covariance symmetry error eps_cov (worst element)")
    ax.set_ylabel(f"equivariance error, worst over {group}")
    ax.set_title("Error vs eps at fixed h (Theorem 3.6: at most linear)")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    if "symmetry_error_mmd" in s:
        per = s.groupby("kappa").agg(eps=("eps", "first"), mmd=("symmetry_error_mmd", "first"), q=("null_q95", "first"))
        ax.plot(per["eps"], per["mmd"], "o-", color=PALETTE[0], label="MMD eps_G (symmetry.measure, exact)")
        ax.plot(per["eps"], per["q"], ":", color="0.5", label="MMD randomisation null q95")
        for k, r in per.iterrows():
            ax.annotate(f"kappa={k:g}", (r["eps"], r["mmd"]), fontsize=6, xytext=(3, -8), textcoords="offset points")
        ax.legend(fontsize=7)
    ax.set_xlabel("covariance symmetry error eps_cov")
    ax.set_ylabel("squared MMD symmetry error")
    ax.set_title("The two definitions of eps (same family)")
    fig.tight_layout()
    out["eps"] = fig

    fig, axes = subplots(2, 1, width=3.5, height=3.4)
    lo = min(s["fit"].min(), s["envelope"].min(), s["equivariance_error"].min())
    hi = max(s["fit"].max(), s["envelope"].max(), s["equivariance_error"].max())
    panels = (
        ("fit", res["a"], res["b"], "Least-squares fit", res["held_bounded"], res["held_max_ratio"]),
        (
            "envelope",
            res["envelope_a"],
            res["envelope_b"],
            "Tightest bound over the fit half",
            res["held_bounded_envelope"],
            res["held_max_ratio_envelope"],
        ),
    )
    for ax, (column, a, b, title, bounded, ratio) in zip(axes[0], panels, strict=True):
        for train, marker, name in ((True, "o", "fit half"), (False, "s", "held out")):
            sub = s[s["train"] == train]
            ax.loglog(sub[column], sub["equivariance_error"], marker, mfc=None if train else "none", label=name)
        ax.loglog([lo, hi], [lo, hi], "k-", lw=1, label="y = x")
        ax.set_xlabel(f"a h^2 + b eps  (a={a:.2e}, b={b:.2e})")
        ax.set_ylabel("measured equivariance error")
        ax.set_title(f"{title}: held out under it {bounded:.0%}\n(max measured / fitted {ratio:.2f})")
        ax.legend()
    fig.tight_layout()
    out["fit"] = fig

    t = trained_summary(frame)
    if len(t):
        fig, axes = subplots(2, 1, width=3.6, height=3.0)
        for i, k in enumerate(sorted(t["kappa"].unique())):
            for model, style in (("learned", "o-"), ("wiener", "s--")):
                sub = t[(t["kappa"] == k) & (t["model"] == model)].sort_values("mesh")
                colour_m = MODEL_COLORS["linear"] if model == "learned" else MODEL_COLORS["plain"]
                kw = {"color": colour_m, "alpha": 1.0 if i == 0 else 0.55}
                name = "learned conv (least squares)" if model == "learned" else "optimal conv (exact covariance)"
                axes[0, 0].loglog(sub["mesh"], sub["equivariance_error"], style, label=f"{name}, kappa={k:g}", **kw)
                axes[0, 1].semilogx(sub["mesh"], sub["mse"], style, label=f"{model}, kappa={k:g}", **kw)
        _mesh_axis(axes[0, 0], t["mesh"])
        _mesh_axis(axes[0, 1], t["mesh"])
        axes[0, 0].set_ylabel(f"equivariance error, worst over {group}")
        axes[0, 0].set_title("Trained vs optimal convolution (analysis.equivariance)")
        axes[0, 0].legend(fontsize=6)
        axes[0, 1].set_ylabel("test MSE / field variance")
        axes[0, 1].set_title("Restoration error (held-out rasters)")
        axes[0, 1].legend(fontsize=6)
        fig.tight_layout()
        out["trained"] = fig
    return out


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Fitted slope in h (bound rate 2), held-out fraction under the fitted bound, linearity in eps, trained models."""
    res = analyse(frame, config)
    lo, hi = res["slope_range"]
    sp = res["slope_parts"]
    r2 = res["eps_r2"]
    text = (
        f"slope in h at eps=0 ({lo:g}<=h<={hi:g}): {res['slope']:.2f} (bound rate 2; noise part "
        f"{sp['error_noise']:.2f}, clean-signal part {sp['error_signal']:.2f}); held-out points under the fitted "
        f"a h^2 + b eps: {res['held_bounded']:.0%} of {res['n_held']} (max measured/fit {res['held_max_ratio']:.2f}), "
        f"under the training envelope: {res['held_bounded_envelope']:.0%} (max {res['held_max_ratio_envelope']:.2f})"
    )
    if r2:
        text += f"; linear in eps at fixed h: R^2 {min(r2.values()):.3f}..{max(r2.values()):.3f}"
    t = trained_summary(frame)
    if len(t):
        piv = t.pivot_table(index=["kappa", "mesh"], columns="model", values="equivariance_error")
        ratio = (piv["learned"] / piv["wiener"]).to_numpy()
        text += f"; learned conv / optimal conv equivariance error {ratio.min():.2g}..{ratio.max():.2g}"
    return text
