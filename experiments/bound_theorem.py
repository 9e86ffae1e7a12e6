"""Experiment ``bound`` (``python -m experiments.run bound``): Theorem 3.6 in its own setting, as checks that can fail.

Setting, assumptions and closed forms: :mod:`theory.deconvolution`, :mod:`theory.bumps`, :mod:`theory.continuum`
(supplement SM5.1-SM5.52; docs/theory.md, section 2.2). Atom images ``r_n = s_n + t a`` (``s_n`` from an
O(2)-invariant zero-mean law, ``a`` one fixed off-centre atom, so ``t = 0`` is exact symmetry of the distribution) in
two families: ``bump`` (compact atoms and blur kernel ``(1 - |x|^2/R^2)_+^3``: bounded Hessian and no more, the
theorem's regularity class, so Riemann sums converge algebraically) and ``gaussian`` (analytic: the "smooth" row);
observations ``r_hat = k * r`` (no noise) sampled exactly; the per-sample objective is the Riemann-sum data term plus
``lam ||k_R * r||^2 + mu ||r - t a||^2`` (the template is the data's mean, how ``Omega_eps`` enters), with the kernel
known; its optimum on the mesh is found by conjugate gradients to a relative KKT residual ``tol``.

Cells ``mesh`` (one family, one h): optima for the original and every transformed observation, by linearity for all
``t`` at once. Rows per (group, t): ``measured`` = ``(1/N) sum_n max_A ||Phi~(pi~_A Y_n) - pi~_A Phi~(Y_n)||^2``,
``continuum`` = ``mu^2 t^2 max_A ||H^-1 (a - pi_A a)||^2`` (h -> 0) and ``continuum_rel_diff``, ``eps`` =
``2 mu t^2 max_A ||a - pi_A a||^2`` (squared units) and ``eps_ratio`` = ``measured / ((2/mu) eps)``, each proof step's
measured value and bound (``step1``: ``|F - F~|`` at the continuum optimum, SM5.31; ``step2``: ``||Phi - Phi~||^2``
against ``2 sup|F - F~| / mu``), ``bound = a h^2 + (2/mu) eps`` and ``ratio``, the constants, the KKT residual and two
assumption checks (``assumption_ratio`` <= 1: the optimum's sampled sups over ``F1, G1, H1``; ``boundary``: the
support constraint is inactive). Cells ``measure`` (one ``t``, Gaussian family): :func:`symmetry.measure_dataset` on
the same clean images and further draws. :func:`checks` says which of the theorem's testable claims hold.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.ticker import NullFormatter

from experiments.runner import Context
from experiments.style import PALETTE, subplots
from symmetry.measurement import measure_dataset
from symmetry.streams import rng
from theory import continuum as ct
from theory import deconvolution as dc
from theory.bumps import BumpLaw

LAW_KEYS = ("atoms", "spread", "long", "short", "asym_centre", "asym_long", "asym_short", "asym_angle")
BUMP_KEYS = ("atoms", "spread", "bump_radius", "smoothness", "asym_centre")
PROBLEM_KEYS = ("blur", "mu", "lam", "reg", "tail")
SHARED = ("radius", "images", "seed")


def _law(cell: dict):
    """The data law of the cell's family: oriented Gaussian atoms or finite-smoothness bumps."""
    if cell.get("family", "gaussian") == "bump":
        return BumpLaw(**{k: tuple(cell[k]) if isinstance(cell[k], list) else cell[k] for k in BUMP_KEYS})
    return dc.AtomLaw(**{k: tuple(cell[k]) if isinstance(cell[k], list) else cell[k] for k in LAW_KEYS})


def _problem(cell: dict) -> dc.Deconvolution:
    family = cell.get("family", "gaussian")
    blur = float(cell["bump_blur"] if family == "bump" else cell["blur"])
    values = {k: float(cell[k]) for k in PROBLEM_KEYS if k != "blur"}
    return dc.Deconvolution(blur=blur, family=family, smoothness=int(cell.get("smoothness", 3)), **values)


def _dataset(cell: dict, count: int | None = None):
    """The first ``count`` (default ``images``) symmetric parts ``s_n`` of stream ``split`` (key 0) and the atom ``a``.

    Draws are sequential, so a larger ``count`` extends the same images (the ``measure`` cells use more)."""
    law = _law(cell)
    n = int(cell["images"] if count is None else count)
    return law.sample(n, rng(int(cell["seed"]), "split", 0)), law.asymmetric_part()


def cells(config: dict) -> list[dict]:
    """``mesh`` cells over the families and meshes, and ``measure`` cells over ``t`` (Gaussian family)."""
    base = {k: config[k] for k in (*LAW_KEYS, *PROBLEM_KEYS, *SHARED)}
    bump = {k: config[k] for k in ("bump_radius", "smoothness", "bump_blur")}
    out = [
        {
            "kind": "mesh",
            "family": family,
            **base,
            **(bump if family == "bump" else {}),
            "mesh": float(h),
            "ts": config["ts"],
            "groups": config["groups"],
            "tol": config["tol"],
            **({"fine_step": config["fine_step"]} if "fine_step" in config else {}),
        }
        for family in config["families"]
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
    law, problem = _law(cell), _problem(cell)
    if isinstance(law, BumpLaw):
        need = law.support(problem.blur)
    else:
        tau = dc.tail_factor(problem.tail)
        need = max(
            law.spread + tau * math.hypot(law.long, problem.blur),
            math.hypot(*law.asym_centre) + tau * math.hypot(law.asym_long, problem.blur),
        )
    if need > float(cell["radius"]):
        raise ValueError(f"radius {cell['radius']} is smaller than the images' support {need:.3f}")
    return need


CONSTANT_KEYS = ("F1", "G1", "H1", "C_reg", "C0", "C_bar", "C1", "C2", "a", "b")
CONSTANT_KEYS += ("F2", "G2", "H2", "F3", "G3", "H3", "D_r", "D_k", "D_R")


def _run_mesh(cell: dict, device=None) -> list[dict]:
    """The rows of one mesh; ``device`` (a torch device, CPU by default) runs the output interpolation."""
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
    elements = {g: dc.group_elements(g) for g in cell["groups"]}
    unique = {el.name: el for els in elements.values() for el in els}
    parts_err = {}  # name -> (e_ss (N,), e_sa (N,), e_aa)
    for name, el in unique.items():
        a = dc.element_matrix(el)
        xa, k_a, it_a = solver.solve(observe(a), template, tol=float(cell["tol"]))  # template not transformed
        kkt.append(float(k_a.max()))
        iterations.append(it_a)
        d = xa - dc.transform_array(x0, el, mesh, device)
        ds, da = d[:n], d[n]
        parts_err[name] = (dc.norm2(ds, h), h**2 * (ds * da).sum((-2, -1)), float(dc.norm2(da, h)))
    # the continuum side (theory.continuum): optimum, exact error, eps in squared units, proof steps
    grid = ct.FourierGrid(mesh, float(cell.get("fine_step", ct.FINE_STEP)))
    obs_hat, asym_hat = ct.transform_of(blurred, grid), grid.spectrum(asym)
    cont = {name: ct.continuum_error(asym, el, problem, grid) for name, el in unique.items()}
    gaps = {name: ct.asymmetry(asym, el, grid) for name, el in unique.items()}
    ring = np.sqrt((mesh.points**2).sum(-1)) > radius - 2 * h
    rows = []
    for t in cell["ts"]:
        t = float(t)
        sol = x0[:n] + t * x0[n]
        sups = dc.spectral_sups(sol, mesh)
        boundary = float(np.abs(sol[:, ring & mesh.mask]).max() / np.abs(sol).max())
        consts = dc.theorem_constants(dc.image_bounds(parts, asym, t), problem, radius)
        assumption = max(float(s.max()) / consts[k] for s, k in zip(sups, ("F1", "G1", "H1"), strict=True))
        y_hat = obs_hat[:n] + t * obs_hat[n]
        m_hat = np.broadcast_to(t * asym_hat, y_hat.shape)
        phi_hat = ct.continuum_optimum(y_hat, m_hat, problem, grid)
        steps = ct.proof_steps(phi_hat, y_hat, m_hat, sol, solver, grid)
        step_bound = ct.step_bounds(consts, h)
        for group, els in elements.items():
            err = np.stack([ess + 2 * t * esa + t**2 * eaa for ess, esa, eaa in (parts_err[e.name] for e in els)])
            measured = float(err.max(0).mean())
            continuum = t**2 * max(cont[e.name] for e in els)
            eps = ct.eps_squared(max(gaps[e.name] for e in els), t, problem)
            bound_h2, bound_eps = consts["a"] * h**2, consts["b"] * eps
            rows.append(
                {
                    "family": problem.family,
                    "group": group,
                    "t": t,
                    "h": h,
                    "m": mesh.m,
                    "measured": measured,
                    "measured_worst_element": float(err.mean(1).max()),
                    "continuum": continuum,
                    "continuum_rel_diff": abs(measured - continuum) / continuum if continuum > 0 else math.nan,
                    "eps": eps,
                    "bound_h2": bound_h2,
                    "bound_eps": bound_eps,
                    "eps_ratio": measured / bound_eps if bound_eps > 0 else math.nan,
                    "bound": bound_h2 + bound_eps,
                    "ratio": measured / (bound_h2 + bound_eps),
                    "step1": float(steps["step1"].max()),
                    "step2": float(steps["step2"].max()),
                    **step_bound,
                    "grid_exact": all(e.is_grid_exact for e in els),
                    "kkt_residual": max(kkt),
                    "cg_iterations": max(iterations),
                    "assumption_ratio": assumption,
                    "boundary": boundary,
                    **{k: consts[k] for k in CONSTANT_KEYS},
                }
            )
    for row in rows:
        row["solve_seconds"] = time.perf_counter() - start
    return rows


class _AnalyticImage:
    """An :class:`theory.deconvolution.AtomImage` as a ``symmetry.measure`` source (analytic: exact transforms).

    One native pixel is ``pixel`` physical units; the frame is ``size`` native pixels a side; rasters follow
    :mod:`symmetry.synthetic` (row index down = y decreasing).
    """

    def __init__(self, image, size: float, pixel: float, name: str):
        self.image, self.size, self.pixel, self.name = image, size, pixel, name

    def evaluate(self, points):
        pts = points.detach().cpu().numpy().astype(np.float64) * self.pixel
        return torch.from_numpy(self.image.evaluate(pts))[None]

    def at_mesh(self, mesh: float):
        n = max(1, int(math.floor(self.size / mesh + 1e-9)))
        t = (torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * mesh
        y, x = torch.meshgrid(-t, t, indexing="ij")
        return self.evaluate(torch.stack([x, y], dim=-1))

    def load(self):
        return self.at_mesh(1.0)


def measured_symmetry(images: list, cell: dict, device="cpu") -> dict:
    """:func:`symmetry.measure_dataset` on analytic images: worst-element MMD and Frechet distance."""
    report = measure_dataset(
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
        dtype=torch.float64,
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

#: An error below this (squared norms of order 1) is rounding: the group maps the mesh onto itself.
ROUNDING = 1e-20
#: The finest-h error must match the continuum value to this relative difference (grid-exact groups, t > 0).
CONTINUUM_TOLERANCE = 1e-3
#: The rate the theorem guarantees at eps = 0: error <= a h^2.
THEOREM_RATE = 2.0
#: Values below this fraction of a quantity's largest value are at the floor of its computation (rounding, the
#: continuum quadrature): the exponent is fitted above it.
FLOOR = 1e-10


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The ``mesh`` rows, with the ``measure`` rows' MMD and Frechet distance joined on ``t`` (Gaussian family)."""
    measured_cols = ["mmd", "mmd_null_q95", "mmd_p_value", "frechet"]
    s = frame[frame["kind"] == "mesh"].drop(columns=measured_cols, errors="ignore").copy()
    if "family" not in s:
        s["family"] = "gaussian"
    s["family"] = s["family"].fillna("gaussian")
    for col in ("t", "h", "measured", "bound", "ratio", "eps"):
        s[col] = s[col].astype(float)
    s["error_over_h2"] = s["measured"] / s["h"] ** 2
    m = frame[frame["kind"] == "measure"]
    if len(m):
        joined = m[["t", *measured_cols]].astype(float).assign(family="gaussian")
        s = s.merge(joined, on=["family", "t"], how="left")
    return s.sort_values(["family", "group", "t", "h"], ascending=[True, True, True, False]).reset_index(drop=True)


def rate(s: pd.DataFrame, family: str, group: str, column: str = "measured") -> dict:
    """At ``t = 0``: the exponent ``p`` of ``column ~ h^p`` fitted over the meshes whose value is above rounding and
    above :data:`FLOOR` times the largest value, with its 95% interval (:func:`theory.continuum.fit_exponent`), and
    whether every value is at rounding level."""
    sub = s[(s["family"] == family) & (s["group"] == group) & (s["t"] == 0)].sort_values("h")
    above = sub[(sub[column] > ROUNDING) & (sub[column] > FLOOR * sub[column].max())]
    fit = ct.fit_exponent(above["h"], above[column])
    return {
        "family": family,
        "group": group,
        "quantity": column,
        "exact": bool(len(above) == 0),
        "max_error": float(sub[column].max()),
        **fit,
        "meshes": len(sub),
        "finest_h": float(sub["h"].min()),
        "coarsest_h": float(above["h"].max()) if len(above) else math.nan,
        "sup_over_h2": float((sub[column] / sub["h"] ** 2).max()),
    }


def rates(s: pd.DataFrame) -> pd.DataFrame:
    """:func:`rate` of the equivariance error (every family and group) and of both proof steps (every family)."""
    rows = [rate(s, f, g) for f in sorted(s["family"].unique()) for g in sorted(s["group"].unique())]
    first = sorted(s["group"].unique())[0]  # the steps do not depend on the group
    rows += [rate(s, f, first, c) for f in sorted(s["family"].unique()) for c in ("step1", "step2")]
    return pd.DataFrame(rows)


def steps_table(s: pd.DataFrame) -> pd.DataFrame:
    """One row per proof step per (family, t, h) point: measured, bound, ratio (steps 1-2 do not depend on the
    group; step 3, the final bound, is per group)."""
    first = sorted(s["group"].unique())[0]
    rows = []
    for r in s.itertuples():
        if r.group == first:
            rows.append((r.family, "all", r.t, r.h, "1: |F - F~| (SM5.31)", r.step1, r.step1_bound))
            rows.append(
                (r.family, "all", r.t, r.h, "2: ||Phi - Phi~||^2 <= 2 sup|F - F~| / mu", r.step2, r.step2_bound)
            )
        rows.append((r.family, r.group, r.t, r.h, "3: equivariance error (Theorem 3.6)", r.measured, r.bound))
    out = pd.DataFrame(rows, columns=["family", "group", "t", "h", "step", "measured", "bound"])
    out["ratio"] = out["measured"] / out["bound"]
    return out


def eps_slope(s: pd.DataFrame) -> pd.DataFrame:
    """At the finest h and every t > 0: measured against the continuum value and against ``(2/mu) eps``."""
    fine = s[(s["h"] == s.groupby("family")["h"].transform("min")) & (s["t"] > 0)]
    cols = ["family", "group", "t", "h", "measured", "continuum", "continuum_rel_diff", "eps", "bound_eps", "eps_ratio"]
    return fine[cols].reset_index(drop=True)


def check_exact(s: pd.DataFrame) -> bool:
    """Every grid-exact group's error at ``t = 0`` is at rounding level (an equivariant problem and the right group
    action make quarter turns exact permutations)."""
    zero = s[(s["t"] == 0) & s["grid_exact"].astype(bool)]
    return bool(len(zero) > 0 and (zero["measured"] < ROUNDING).all())


def check_rate(s: pd.DataFrame) -> bool:
    """For every (family, group) whose error is not exact, the fitted exponent at ``t = 0`` has the lower end of its
    95% interval at or above :data:`THEOREM_RATE` (the proof steps' exponents are reported, not checked: ``|F - F~|``
    at one point may dip through zero)."""
    r = rates(s)
    inexact = r[~r["exact"] & (r["quantity"] == "measured")]
    return bool(len(inexact) > 0 and (inexact["low"] >= THEOREM_RATE).all())


def converged_rows(s: pd.DataFrame) -> pd.DataFrame:
    """Finest-mesh rows (``t > 0``) whose error changed by less than :data:`CONTINUUM_TOLERANCE` (relative) from the
    next coarser mesh: where the error no longer changes with ``h``."""
    out = []
    for _, sub in s[s["t"] > 0].groupby(["family", "group", "t"]):
        sub = sub.sort_values("h")
        if len(sub) < 2:
            continue
        fine, next_ = sub.iloc[0], sub.iloc[1]
        if abs(fine["measured"] - next_["measured"]) <= CONTINUUM_TOLERANCE * fine["measured"]:
            out.append(fine)
    return pd.DataFrame(out)


def check_continuum(s: pd.DataFrame) -> bool:
    """Where the error has converged in ``h`` (:func:`converged_rows`; at least one such row), it equals the
    continuum value ``mu^2 t^2 ||H^-1 (a - pi_A a)||^2`` to :data:`CONTINUUM_TOLERANCE` (relative)."""
    conv = converged_rows(s)
    return bool(len(conv) > 0 and (conv["continuum_rel_diff"] <= CONTINUUM_TOLERANCE).all())


def check_eps_slope(s: pd.DataFrame) -> bool:
    """At the finest mesh, ``measured <= (2/mu) eps`` for every ``t > 0`` and the ratio is the same for every ``t``
    (spread below 1% of its mean): the ``t^2`` law of the squared-units eps."""
    fine = eps_slope(s)
    if len(fine) == 0:
        return False
    spread = fine.groupby(["family", "group"])["eps_ratio"].agg(lambda v: (v.max() - v.min()) / v.mean())
    return bool((fine["eps_ratio"] <= 1).all() and (spread < 0.01).all())


def check_bounds(s: pd.DataFrame) -> bool:
    """Every proof step's measured value is at most its bound (:func:`steps_table`)."""
    steps = steps_table(s)
    return bool((steps["measured"] <= steps["bound"]).all())


def checks(s: pd.DataFrame) -> dict[str, bool]:
    """The checks that can say "no", each computed from the rows; the tests give each a broken variant it rejects."""
    return {
        "exact": check_exact(s),
        "rate": check_rate(s),
        "continuum": check_continuum(s),
        "eps_slope": check_eps_slope(s),
        "bounds": check_bounds(s),
    }


def verdict(frame: pd.DataFrame, config: dict) -> str:
    """Largest ratio, violations, the fitted rates at eps = 0, the continuum equality, the eps slope, each proof
    step and the checks, all computed."""
    s = summary(frame)
    worst = s.loc[s["ratio"].idxmax()]
    violated = s[s["measured"] > s["bound"]]
    text = (
        f"measured <= bound at {len(s) - len(violated)} of {len(s)} (family, group, t, h) points"
        f" (largest ratio {worst['ratio']:.2e} at {worst['family']} {worst['group']}, t={worst['t']:g},"
        f" h={worst['h']:g}; finest h {s['h'].min():g})"
    )
    if len(violated):
        v = violated.loc[violated["ratio"].idxmax()]
        text += (
            f"; VIOLATED at {len(violated)} points, worst {v['ratio']:.3g}x at {v['group']} t={v['t']:g} h={v['h']:g}"
        )
    parts = []
    for r in rates(s).itertuples():
        what = f"{r.family} {r.group}" if r.quantity == "measured" else f"{r.family} proof {r.quantity}"
        if r.exact:
            parts.append(f"{what} exact to rounding (<= {r.max_error:.1e} at every h)")
        elif math.isnan(r.low):
            parts.append(f"{what} exponent {r.exponent:.2f} ({r.n} meshes above rounding: no interval)")
        else:
            parts.append(
                f"{what} exponent {r.exponent:.2f} [{r.low:.2f}, {r.high:.2f}] ({r.n} meshes, h {r.finest_h:g}.."
                f"{r.coarsest_h:g})"
            )
    text += f"; eps = 0, error ~ h^p (95% t interval; the theorem guarantees p >= {THEOREM_RATE:g}): " + "; ".join(
        parts
    )
    fine = eps_slope(s)
    if len(fine):
        for (family, group), sub in fine.groupby(["family", "group"]):
            text += (
                f"; {family} {group} at h={sub['h'].iloc[0]:g}: measured/continuum - 1 up to "
                f"{sub['continuum_rel_diff'].max():.1e}, measured/((2/mu) eps) {sub['eps_ratio'].min():.4f}.."
                f"{sub['eps_ratio'].max():.4f} over t = {', '.join(f'{t:g}' for t in sub['t'])}"
            )
    steps = steps_table(s)
    for step, sub in steps.groupby("step"):
        text += f"; step {step}: largest measured/bound {sub['ratio'].max():.1e}"
    text += "; checks: " + ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in checks(s).items())
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


def mesh_ticks(ax, meshes, label: str = "mesh size h") -> None:
    """Label a logarithmic mesh axis at the meshes themselves (also used by ``bound_lmmse``)."""
    ticks = sorted({float(h) for h in meshes})
    ax.set_xticks(ticks, [f"{h:g}" for h in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def figures(frame: pd.DataFrame, config: dict) -> dict:
    """``loglog`` (measured and bound vs h), ``ratio`` (heat map), ``rate`` (error vs h at eps = 0 with the fitted
    exponent, per family), ``steps`` (each proof step against its bound), ``eps`` (measured/((2/mu) eps) vs t)."""
    s = summary(frame)
    families = sorted(s["family"].unique())
    groups = sorted(s["group"].unique())
    ts = sorted(s["t"].unique())
    colour = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(ts)}
    out = {}

    fig, axes = subplots(len(groups), len(families), width=3.6, height=2.8)
    for i, family in enumerate(families):
        for ax, g in zip(axes[i], groups, strict=True):
            for t in ts:
                sub = s[(s["family"] == family) & (s["group"] == g) & (s["t"] == t)].sort_values("h")
                ax.loglog(sub["h"], sub["measured"].clip(lower=1e-32), "o-", color=colour[t], label=f"t={t:g}")
                ax.loglog(sub["h"], sub["bound"], "--", color=colour[t], lw=1)
            mesh_ticks(ax, s["h"])
            ax.set_ylabel("(1/N) sum ||.||_F^2")
            ax.set_title(f"{family} {g}: measured (solid), bound (dashed)", fontsize=8)
    axes[-1, 0].legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3)
    fig.tight_layout()
    out["loglog"] = fig

    fig, axes = subplots(len(groups), len(families), width=3.2, height=2.6)
    for i, family in enumerate(families):
        for ax, g in zip(axes[i], groups, strict=True):
            piv = s[(s["family"] == family) & (s["group"] == g)].pivot_table(index="t", columns="h", values="ratio")
            piv.index, piv.columns = [f"{t:g}" for t in piv.index], [f"{h:g}" for h in piv.columns]
            sns.heatmap(np.log10(piv.clip(lower=1e-40)), ax=ax, annot=True, fmt=".0f", cmap="viridis", cbar=False)
            ax.set_title(f"{family} {g}: log10(measured / bound)", fontsize=8)
    fig.tight_layout()
    out["ratio"] = fig

    r = rates(s)
    fig, axes = subplots(len(families), 1, width=3.8, height=3.0)
    for ax, family in zip(axes[0], families, strict=True):
        zero = s[(s["t"] == 0) & (s["family"] == family) & (s["measured"] > ROUNDING)]
        for k, (g, sub) in enumerate(zero.groupby("group")):
            fit = r[(r["family"] == family) & (r["group"] == g) & (r["quantity"] == "measured")].iloc[0]
            label = f"{g}: p = {fit['exponent']:.2f} [{fit['low']:.2f}, {fit['high']:.2f}]"
            ax.loglog(sub["h"], sub["measured"], "o-", color=PALETTE[k], label=label)
        hs = np.array(sorted(s["h"].unique()))
        if len(zero):
            ref = zero["measured"].max() * (hs / hs.max()) ** THEOREM_RATE
            ax.loglog(hs, ref, ":", color="0.4", label="slope 2 (theorem)")
        mesh_ticks(ax, hs)
        ax.set_ylabel("equivariance error at eps = 0")
        ax.set_title(f"{family}: error ~ h^p, p with its 95% interval", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    out["rate"] = fig

    st = steps_table(s)
    st = st[st["group"].isin(["all", groups[-1]])]
    fig, axes = subplots(len(families), 1, width=3.8, height=3.0)
    for ax, family in zip(axes[0], families, strict=True):
        sub = st[(st["family"] == family) & (st["t"] == max(ts))]
        for k, (step, rows) in enumerate(sub.groupby("step")):
            rows = rows.sort_values("h")
            ax.loglog(
                rows["h"], rows["measured"].clip(lower=1e-32), "o-", color=PALETTE[k], label=step[:2] + " measured"
            )
            ax.loglog(rows["h"], rows["bound"], "--", color=PALETTE[k], lw=1)
        mesh_ticks(ax, sub["h"])
        ax.set_title(f"{family}, t = {max(ts):g}: proof steps, measured (solid) and bound (dashed)", fontsize=7)
        ax.legend(fontsize=6)
    fig.tight_layout()
    out["steps"] = fig

    fine = eps_slope(s)
    fig, axes = subplots(2, 1, width=3.6, height=3.0)
    if len(fine):
        sns.lineplot(data=fine, x="t", y="eps_ratio", hue="group", style="family", marker="o", ax=axes[0, 0])
        axes[0, 0].set_xscale("log")
        axes[0, 0].set_ylim(0, None)
        axes[0, 0].axhline(0.25, color="0.4", ls=":", lw=1)
        axes[0, 0].set_title("finest h: measured / ((2/mu) eps), eps = 2 mu t^2 ||a - pi_A a||^2", fontsize=7)
        sns.scatterplot(data=fine, x="continuum", y="measured", hue="group", style="family", ax=axes[0, 1])
        lim = [fine["continuum"].min(), fine["continuum"].max()]
        axes[0, 1].plot(lim, lim, ":", color="0.4")
        axes[0, 1].set_xscale("log")
        axes[0, 1].set_yscale("log")
        axes[0, 1].set_title("finest h: measured vs continuum mu^2 t^2 ||H^-1 (a - pi_A a)||^2", fontsize=7)
    fig.tight_layout()
    out["eps"] = fig
    return out
