"""Experiment ``bound`` (``python -m experiments.run bound``): Theorem 3.6 in its own setting, constants computed.

Setting, assumptions and closed forms: :mod:`analysis.deconvolution` (supplement SM5.1-SM5.52). In short: analytic
atom images ``r_n = s_n + t a`` (``s_n`` from an O(2)-invariant zero-mean law, ``a`` one fixed oriented atom, so
``t = 0`` is exact symmetry of the distribution); observations ``r_hat = k * r`` (Gaussian blur, no noise) sampled
exactly; the per-sample objective is the Riemann-sum data term plus ``lam ||k_R * r||^2 + mu ||r - t a||^2`` (the
template is the data's mean, how ``Omega_eps`` enters), with the kernel known; its optimum on the mesh is found by
conjugate gradients to a relative KKT residual ``tol``; transforms are exact sampling of the transformed functions.

Two kinds of cells:

- ``mesh`` (one mesh size h): optima for the original and every transformed observation (every element of every
  group), by linearity for all ``t`` at once (``Phi~`` is affine in ``(Y_hat, m)``: the ``s_n`` part and the ``a``
  part are solved separately and combined exactly). Rows per (group, t): ``measured`` =
  ``(1/N) sum_n max_A ||Phi~(pi~_A Y_hat_n) - pi~_A Phi~(Y_hat_n)||_F^2`` (the worst element per sample, the
  strongest choice of ``A_n`` the theorem allows), ``bound = a h^2 + (2/mu) eps`` from the computed constants,
  ``ratio = measured / bound``, the design ``eps`` (:func:`analysis.deconvolution.design_eps`), the constants, the
  KKT residual, and two checks of assumptions: the optimum's sampled sups over ``F1, G1, H1`` (``assumption_ratio``
  <= 1) and its largest value on the outer ring of the disk relative to its maximum (``boundary``: the support
  constraint is inactive when this is negligible).
- ``measure`` (one ``t``): :func:`symmetry.measure` on the same clean images (analytic, exact transforms) and
  further draws of the same law and stream (``measure_images`` in all: with a handful of images the empirical
  distribution is itself asymmetric): the toolkit's MMD symmetry error and its Gaussian (Frechet) image-norm
  distance, worst element.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from experiments.runner import Context

LAW_KEYS = ("atoms", "spread", "long", "short", "asym_centre", "asym_long", "asym_short", "asym_angle")
PROBLEM_KEYS = ("blur", "mu", "lam", "reg", "tail")
SHARED = ("radius", "images", "seed")


def _law(cell: dict):
    from analysis.deconvolution import AtomLaw

    return AtomLaw(**{k: tuple(cell[k]) if isinstance(cell[k], list) else cell[k] for k in LAW_KEYS})


def _problem(cell: dict):
    from analysis.deconvolution import Deconvolution

    return Deconvolution(**{k: float(cell[k]) for k in PROBLEM_KEYS})


def _dataset(cell: dict, count: int | None = None):
    """The first ``count`` (default ``images``) symmetric parts ``s_n`` of stream ``split`` (key 0) and the atom ``a``.

    Draws are sequential, so a larger ``count`` extends the same images (the ``measure`` cells use more)."""
    from symmetry.streams import rng

    law = _law(cell)
    n = int(cell["images"] if count is None else count)
    return law.sample(n, rng(int(cell["seed"]), "split", 0)), law.asymmetric_part()


def cells(config: dict) -> list[dict]:
    """``mesh`` cells over the meshes and ``measure`` cells over ``t``."""
    base = {k: config[k] for k in (*LAW_KEYS, *PROBLEM_KEYS, *SHARED)}
    out = [
        {
            "kind": "mesh",
            **base,
            "mesh": float(h),
            "ts": config["ts"],
            "groups": config["groups"],
            "so2_angles": config["so2_angles"],
            "tol": config["tol"],
        }
        for h in config["meshes"]
    ]
    m = config["measure"]
    out += [
        {"kind": "measure", **base, "t": float(t), **{k: v for k, v in m.items() if k != "ts"}}
        for t in (m["ts"] if m.get("windows", 0) else [])
    ]
    return out


def run_cell(cell: dict, ctx: Context) -> list[dict]:
    """One cell's rows (see the module docstring)."""
    device = getattr(ctx, "device", None)
    device = device if device is not None and getattr(device, "type", "cpu") != "cpu" else None  # CPU: NumPy
    return _run_mesh(cell, device) if cell["kind"] == "mesh" else _run_measure(cell, getattr(ctx, "device", "cpu"))


def check_support(cell: dict) -> float:
    """The radius beyond which every ``r_n`` and ``r_hat_n`` is below ``tail`` x peak; it must fit in ``radius``."""
    from analysis.deconvolution import tail_factor

    law, problem = _law(cell), _problem(cell)
    tau = tail_factor(problem.tail)
    need = max(
        law.spread + tau * math.hypot(law.long, problem.blur),
        math.hypot(*law.asym_centre) + tau * math.hypot(law.asym_long, problem.blur),
    )
    if need > float(cell["radius"]):
        raise ValueError(f"radius {cell['radius']} is smaller than the images' support {need:.3f}")
    return need


def _run_mesh(cell: dict, device=None) -> list[dict]:
    """The rows of one mesh; ``device`` (a torch device, CPU by default) runs the output interpolation."""
    from analysis import deconvolution as dc

    start = time.perf_counter()
    check_support(cell)
    problem, radius, h = _problem(cell), float(cell["radius"]), float(cell["mesh"])
    parts, asym = _dataset(cell)
    n = len(parts)
    mesh = dc.Mesh(h, radius)
    solver = dc.Solver(problem, mesh)
    blurred = [s.blurred(problem.blur) for s in parts] + [asym.blurred(problem.blur)]
    template = np.zeros((n + 1, mesh.m, mesh.m))
    template[n] = mesh.sample(asym)  # the a-part carries m = a (times t); the s_n parts carry no template

    def observe(matrix=None):
        return np.stack([mesh.sample(b, matrix) for b in blurred])

    x0, kkt0, iters = solver.solve(observe(), template, tol=float(cell["tol"]))
    kkt, iterations = [float(kkt0.max())], [iters]
    elements = {g: dc.group_elements(g, int(cell["so2_angles"])) for g in cell["groups"]}
    unique = {name: a for els in elements.values() for name, a in els}
    parts_err = {}  # name -> (e_ss (N,), e_sa (N,), e_aa)
    for name, a in unique.items():
        xa, k_a, it_a = solver.solve(observe(a), template, tol=float(cell["tol"]))  # template not transformed
        kkt.append(float(k_a.max()))
        iterations.append(it_a)
        d = xa - dc.transform_array(x0, a, mesh, device)
        ds, da = d[:n], d[n]
        parts_err[name] = (dc.norm2(ds, h), h**2 * (ds * da).sum((-2, -1)), float(dc.norm2(da, h)))
    ring = np.sqrt((mesh.points**2).sum(-1)) > radius - 2 * h
    rows = []
    for t in cell["ts"]:
        t = float(t)
        sol = x0[:n] + t * x0[n]
        sups = dc.spectral_sups(sol, mesh)
        boundary = float(np.abs(sol[:, ring & mesh.mask]).max() / np.abs(sol).max())
        consts = dc.theorem_constants(dc.image_bounds(parts, asym, t), problem, radius)
        assumption = max(float(s.max()) / consts[k] for s, k in zip(sups, ("F1", "G1", "H1"), strict=True))
        for group, els in elements.items():
            err = np.stack([ess + 2 * t * esa + t**2 * eaa for ess, esa, eaa in (parts_err[nm] for nm, _ in els)])
            eps_n = np.max([dc.design_eps(parts, asym, t, problem, a) for _, a in els], axis=0)
            measured = float(err.max(0).mean())
            eps = float(eps_n.mean())
            bound_h2, bound_eps = consts["a"] * h**2, consts["b"] * eps
            rows.append(
                {
                    "group": group,
                    "t": t,
                    "h": h,
                    "m": mesh.m,
                    "measured": measured,
                    "measured_worst_element": float(err.mean(1).max()),
                    "eps": eps,
                    "bound_h2": bound_h2,
                    "bound_eps": bound_eps,
                    "bound": bound_h2 + bound_eps,
                    "ratio": measured / (bound_h2 + bound_eps),
                    "grid_exact": all(dc.is_grid_exact(a) for _, a in els),
                    "kkt_residual": max(kkt),
                    "cg_iterations": max(iterations),
                    "assumption_ratio": assumption,
                    "boundary": boundary,
                    **{k: consts[k] for k in ("F1", "G1", "H1", "C_reg", "C0", "C_bar", "C1", "C2", "a", "b")},
                    **{k: consts[k] for k in ("F2", "G2", "H2", "F3", "G3", "H3", "D_r", "D_k", "D_R")},
                }
            )
    for row in rows:
        row["solve_seconds"] = time.perf_counter() - start
    return rows


class _AnalyticImage:
    """An :class:`analysis.deconvolution.AtomImage` as a ``symmetry.measure`` source (analytic: exact transforms).

    One native pixel is ``pixel`` physical units; the frame is ``size`` native pixels a side; rasters follow
    :mod:`symmetry.synthetic` (row index down = y decreasing).
    """

    def __init__(self, image, size: float, pixel: float, name: str):
        self.image, self.size, self.pixel, self.name = image, size, pixel, name

    def evaluate(self, points):
        import torch

        pts = points.detach().cpu().numpy().astype(np.float64) * self.pixel
        return torch.from_numpy(self.image.evaluate(pts))[None]

    def at_mesh(self, mesh: float):
        import torch

        n = max(1, int(math.floor(self.size / mesh + 1e-9)))
        t = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * mesh
        y, x = torch.meshgrid(-t, t, indexing="ij")
        return self.evaluate(torch.stack([x, y], dim=-1))

    def load(self):
        return self.at_mesh(1.0)


def measured_symmetry(images: list, cell: dict, device="cpu") -> dict:
    """:func:`symmetry.measure_dataset` on analytic images: worst-element MMD and Frechet distance."""
    import symmetry

    report = symmetry.measure_dataset(
        images,
        cell["group"],
        mesh=float(cell["measure_mesh"]),
        radius=float(cell["window_radius"]),
        windows=int(cell["windows"]),
        permutations=int(cell["permutations"]),
        bootstrap=int(cell["permutations"]),
        seed=int(cell["seed"]),
        exact=True,
        frechet=True,
        device=device,
        dtype=__import__("torch").float64,
    )
    frame = report.to_frame()
    worst = frame[frame["statistic"] == "worst"].iloc[0]
    return {
        "mmd": float(worst["symmetry_error"]),
        "mmd_null_q95": float(worst["null_q95"]),
        "mmd_p_value": float(worst["p_value"]),
        "frechet": float(worst["frechet_distance"]),
    }


def _run_measure(cell: dict, device="cpu") -> list[dict]:
    parts, asym = _dataset(cell, max(int(cell["images"]), int(cell["measure_images"])))
    t = float(cell["t"])
    pixel = float(cell["pixel"])
    size = float(cell["frame"]) / pixel
    images = [_AnalyticImage(s + asym.scaled(t), size, pixel, f"atoms{i}") for i, s in enumerate(parts)]
    return [{"t": t, "measure_group": cell["group"], **measured_symmetry(images, cell, device)}]


# ---- analysis -------------------------------------------------------------------------------------------------


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``mesh`` rows, with the ``measure`` rows' MMD and Frechet distance joined on ``t``."""
    measured_cols = ["mmd", "mmd_null_q95", "mmd_p_value", "frechet"]
    s = frame[frame["kind"] == "mesh"].drop(columns=measured_cols, errors="ignore").copy()
    for col in ("t", "h", "measured", "bound", "ratio", "eps"):
        s[col] = s[col].astype(float)
    s["error_over_h2"] = s["measured"] / s["h"] ** 2
    s["ratio_eps"] = np.where(s["bound_eps"] > 0, s["measured"] / s["bound_eps"].where(s["bound_eps"] > 0), np.nan)
    m = frame[frame["kind"] == "measure"]
    if len(m):
        s = s.merge(m[["t", *measured_cols]].astype(float), on="t", how="left")
    return s.sort_values(["group", "t", "h"], ascending=[True, True, False]).reset_index(drop=True)


#: An error below this (squared norms of order 1) is rounding: the group maps the mesh onto itself.
ROUNDING = 1e-20


def rate(s: pd.DataFrame, group: str) -> dict:
    """At ``t = 0``: ``sup_h error/h^2``, where it is attained, ``error/h^2`` at the finest mesh, whether it is
    non-increasing as h falls, and whether every error is at rounding level (``exact``)."""
    sub = s[(s["group"] == group) & (s["t"] == 0)].sort_values("h")
    i = sub["error_over_h2"].idxmax()
    return {
        "exact": bool((sub["measured"] < ROUNDING).all()),
        "max_error": float(sub["measured"].max()),
        "sup": float(sub.loc[i, "error_over_h2"]),
        "sup_h": float(sub.loc[i, "h"]),
        "finest_h": float(sub["h"].iloc[0]),
        "at_finest": float(sub["error_over_h2"].iloc[0]),
        "monotone": bool(np.all(np.diff(sub["error_over_h2"].to_numpy()) >= 0)),  # non-increasing as h falls
    }


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Largest ratio, finest h, violations, the rate at eps = 0 and the eps relation, all computed."""
    s = summary(frame)
    worst = s.loc[s["ratio"].idxmax()]
    violated = s[s["measured"] > s["bound"]]
    text = (
        f"measured <= bound at {len(s) - len(violated)} of {len(s)} (group, t, h) points"
        f" (largest ratio {worst['ratio']:.2e} at {worst['group']}, t={worst['t']:g}, h={worst['h']:g};"
        f" finest h {s['h'].min():g})"
    )
    if len(violated):
        v = violated.loc[violated["ratio"].idxmax()]
        text += (
            f"; VIOLATED at {len(violated)} points, worst {v['ratio']:.3g}x at {v['group']} t={v['t']:g} h={v['h']:g}"
        )
    parts = []
    for g in sorted(s["group"].unique()):
        r = rate(s, g)
        if r["exact"]:
            parts.append(f"{g} exact to rounding (error <= {r['max_error']:.1e} at every h)")
            continue
        trend = "non-increasing" if r["monotone"] else "not monotone"
        parts.append(
            f"{g} sup error/h^2 {r['sup']:.2e} at h={r['sup_h']:g}, {r['at_finest']:.2e} at h={r['finest_h']:g}"
        )
        parts[-1] += f" ({trend} as h falls)"
    text += "; eps = 0: " + "; ".join(parts)
    fine = s[(s["h"] == s["h"].min()) & (s["t"] > 0)]
    if len(fine):
        lo, hi = fine["ratio_eps"].min(), fine["ratio_eps"].max()
        text += f"; at h={s['h'].min():g} measured / ((2/mu) eps) {lo:.2e}..{hi:.2e}"
    if "mmd" in s and s["mmd"].notna().any():
        text += "; " + measured_eps_sentence(s)
    return text


def measured_eps_sentence(s: pd.DataFrame) -> str:
    """How the toolkit's measured eps (MMD against its randomisation null, Frechet) moves with ``t``."""
    per = (
        s[s["mmd"].notna()]
        .groupby("t")
        .agg(mmd=("mmd", "first"), q=("mmd_null_q95", "first"), p=("mmd_p_value", "first"), fr=("frechet", "first"))
    )
    above = [f"{t:g}" for t, r in per.iterrows() if r["mmd"] > r["q"]]
    rho = per.reset_index()[["t", "mmd"]].corr(method="spearman").iloc[0, 1] if len(per) > 2 else math.nan
    rho_f = per.reset_index()[["t", "fr"]].corr(method="spearman").iloc[0, 1] if len(per) > 2 else math.nan
    return (
        f"toolkit MMD above its null q95 at t in {{{', '.join(above)}}} of {{{', '.join(f'{t:g}' for t in per.index)}}}"
        f" (Spearman with t: MMD {rho:.2f}, Frechet {rho_f:.2f}; Frechet {per['fr'].min():.3g}..{per['fr'].max():.3g})"
    )


# ---- figures --------------------------------------------------------------------------------------------------


def _mesh_ticks(ax, meshes) -> None:
    """Label a logarithmic mesh axis at the meshes themselves."""
    from matplotlib.ticker import NullFormatter

    ticks = sorted({float(h) for h in meshes})
    ax.set_xticks(ticks, [f"{h:g}" for h in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("mesh size h")


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """``loglog`` (measured and bound vs h), ``ratio`` (heat map), ``rate`` (error/h^2 at eps = 0), ``eps``."""
    import seaborn as sns

    from experiments.style import PALETTE, subplots

    s = summary(frame)
    groups = sorted(s["group"].unique())
    ts = sorted(s["t"].unique())
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(ts)}
    out = {}

    fig, axes = subplots(len(groups), 1, width=3.8, height=3.0)
    for ax, g in zip(axes[0], groups, strict=True):
        for t in ts:
            sub = s[(s["group"] == g) & (s["t"] == t)].sort_values("h")
            ax.loglog(sub["h"], sub["measured"].clip(lower=1e-32), "o-", color=colour[t], label=f"measured, t={t:g}")
            ax.loglog(sub["h"], sub["bound"], "--", color=colour[t], lw=1)
        _mesh_ticks(ax, s["h"])
        ax.set_ylabel("equivariance error (1/N) sum ||.||_F^2")
        ax.set_title(f"{g}: measured (solid), bound (dashed)")
    axes[0, 0].legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    fig.tight_layout()
    out["loglog"] = fig

    fig, axes = subplots(len(groups), 1, width=3.2, height=2.8)
    for ax, g in zip(axes[0], groups, strict=True):
        piv = s[s["group"] == g].pivot_table(index="t", columns="h", values="ratio")
        piv.index, piv.columns = [f"{t:g}" for t in piv.index], [f"{h:g}" for h in piv.columns]
        sns.heatmap(np.log10(piv.clip(lower=1e-40)), ax=ax, annot=True, fmt=".0f", cmap="viridis", cbar=False)
        ax.set_title(f"{g}: log10(measured / bound)")
    fig.tight_layout()
    out["ratio"] = fig

    fig, axes = subplots(2, 1, width=3.6, height=3.0)
    zero = s[s["t"] == 0]
    sns.lineplot(data=zero, x="h", y="error_over_h2", hue="group", marker="o", ax=axes[0, 0])
    axes[0, 0].set_xscale("log")
    axes[0, 0].set_yscale("log")
    _mesh_ticks(axes[0, 0], zero["h"])
    axes[0, 0].set_title("eps = 0: error / h^2 (bounded as h -> 0 iff rate >= 2)")
    pos = s[s["t"] > 0]
    sns.lineplot(data=pos, x="h", y="ratio_eps", hue="group", style="t", marker="o", ax=axes[0, 1])
    axes[0, 1].set_xscale("log")
    axes[0, 1].set_yscale("log")
    _mesh_ticks(axes[0, 1], pos["h"])
    axes[0, 1].set_title("t > 0: measured / ((2/mu) eps)")
    axes[0, 1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    out["rate"] = fig

    fine = s[s["h"] == s["h"].min()]
    ncol = 3 if "mmd" in fine and fine["mmd"].notna().any() else 1
    fig, axes = subplots(ncol, 1, width=3.2, height=2.8)
    axes[0, 0].set_title(f"h = {s['h'].min():g}: error vs design eps")
    sns.scatterplot(data=fine, x="eps", y="measured", hue="group", style="group", ax=axes[0, 0])
    if ncol == 3:
        for ax, col, label in ((axes[0, 1], "mmd", "toolkit MMD (worst element)"),
                               (axes[0, 2], "frechet", "toolkit Frechet distance")):  # fmt: skip
            sns.scatterplot(data=fine, x=col, y="measured", hue="group", style="group", ax=ax)
            for t, r in fine.groupby("t").first().iterrows():
                ax.annotate(f"t={t:g}", (r[col], r["measured"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
            if col == "mmd":
                ax.axvline(float(fine["mmd_null_q95"].max()), color="0.5", ls=":", label="largest null q95")
            ax.set_xlabel(label)
            ax.set_title(f"h = {s['h'].min():g}: error vs measured eps")
    fig.tight_layout()
    out["eps"] = fig
    return out
