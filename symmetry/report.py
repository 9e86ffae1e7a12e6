"""The result of a symmetry measurement: assembly from the sums, tidy tables, JSON/CSV output, a terminal rendering.

Decisions (documented in docs/symmetry.md):

- **Multiplicity.** Per group, one test over every (mesh, element) statistic of the run (and, for the
  aggregated default test and scale profiles, every kernel and radius): the smallest of their
  randomisation p-values, calibrated by the same null draws (min-p, :func:`_one_threshold`), so
  perfectly correlated rows (rot90 and rot270) cost nothing. The groups' p-values are Holm-adjusted
  (their draws differ). A group is declared *not symmetric* when its adjusted p-value is below
  ``alpha``; element rows' ``p_adjusted`` (their family-wise min-p value, at least the group's) show
  where the evidence is. A NaN p-value (no null) is never a verdict: ``symmetric`` is then missing.
- **Minimum detectable eps.** ``null_q95`` is the 95% quantile of the randomisation null: an
  error below it cannot be told from a symmetric dataset by this run.
- **Intervals.** Per element: the 95% Poisson-bootstrap percentile interval of the unbiased
  estimate (its bootstrap mean equals the estimate, so it is not biased upward). For the worst
  element the interval is ``[max_A lo_A, max_A hi_A]`` of per-element intervals at the
  Bonferroni level ``1 - 0.05 / (|G| - 1)``: simultaneous intervals for every element imply one
  for their maximum, without bootstrapping a maximum of degenerate U-statistics (which is biased
  upward and could exclude 0 while the test does not reject).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from symmetry.estimators import fit_mesh, holm, min_p_aggregate, p_value
from symmetry.io import atomic_path, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd


def _pandas():
    """The pandas module, imported when a table is first asked for."""
    import pandas  # lazy: about 0.2 s of CPU that only the tables need, not a measurement's start-up (issue 20)

    return pandas


@dataclass
class SymmetryReport:
    """Symmetry error ``eps_G(h)`` of a dataset for one or several groups, per element and mesh (theory.md, sec. 4).

    ``rows`` holds one dict per (group, mesh, statistic): ``statistic`` is an element name, or ``worst``
    (``eps_G = max_A``) or ``mean`` over the non-identity elements. Columns: ``symmetry_error``
    (unbiased squared MMD), ``null_q95`` (95% quantile of the randomisation null: the minimum detectable
    eps), ``p_value``, ``p_adjusted`` (one threshold per group, Holm over the groups; module docstring),
    ``ci_low``/``ci_high`` (95% interval), and with ``frechet`` the image-norm bracket on W2^2
    (squared image-norm units): ``frechet_distance`` (Gelbrich lower bound) and ``w2_upper``
    (assignment upper bound). ``meta`` states the kernel: ``bandwidth_mode`` (``median`` or ``fixed``),
    ``bandwidth_std`` (sigma in standardised units, ``symmetry.settings.window_scale``) and ``bandwidth`` (L2).
    ``fits`` holds the ``eps0 + c h^2`` extrapolation per group and summary statistic; ``verdicts`` one line per group.
    """

    dataset: str
    group: str
    elements: list[str]
    meshes: list[float]
    rows: list[dict]
    fits: list[dict] = field(default_factory=list)
    per_image: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    alpha: float = 0.05
    groups: list[str] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)

    # ---- tables -------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per (group, mesh, element or summary); ``symmetric``: adjusted p >= alpha (missing without a p)."""
        pd = _pandas()
        df = pd.DataFrame(self.rows)
        p = df["p_adjusted"].astype(float) if "p_adjusted" in df else df["p_value"].astype(float)
        df["symmetric"] = pd.array([None if math.isnan(v) else bool(v >= self.alpha) for v in p], dtype="boolean")
        return df

    def summary(self, statistic: str = "worst", group: str | None = None) -> pd.DataFrame:
        """The ``worst`` (eps_G) or ``mean`` rows, one per (group and) mesh."""
        df = self.to_frame()
        keep = df["statistic"] == statistic
        if group is not None:
            keep &= df["group"] == group
        return df[keep].reset_index(drop=True)

    def fit(self, statistic: str = "worst", group: str | None = None) -> dict | None:
        """The ``eps0 + c h^2`` fit of a summary statistic, or None with a single mesh."""
        return next(
            (f for f in self.fits if f["statistic"] == statistic and group in (None, f.get("group"))),
            None,
        )

    def verdict(self, group: str | None = None) -> dict:
        """The one-line verdict of a group (the only one when omitted)."""
        return next(v for v in self.verdicts if group in (None, v["group"]))

    def per_image_frame(self) -> pd.DataFrame:
        """Per-image self-symmetry error ``|d_n(A)|^2 / m_n^2`` (biased, includes the noise floor)."""
        return _pandas().DataFrame(self.per_image)

    def symmetry_error(self, mesh: float | None = None, statistic: str = "worst", group: str | None = None) -> float:
        """``eps_G(h)`` at one mesh (the finest when omitted)."""
        mesh = min(self.meshes) if mesh is None else mesh
        df = self.to_frame()
        keep = (df["mesh"] == mesh) & (df["statistic"] == statistic)
        if group is not None:
            keep &= df["group"] == group
        row = df[keep]
        if row.empty:
            raise KeyError(f"no value for mesh {mesh} and statistic {statistic!r}")
        return float(row["symmetry_error"].iloc[0])

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        return _clean(asdict(self))

    def to_json(self, path=None, indent: int = 2) -> str:
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            atomic_write_text(path, text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path) -> SymmetryReport:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text) as fh:
                text = fh.read()
        return cls(**json.loads(text))

    def to_csv(self, path=None) -> str:
        df = self.to_frame()
        df.insert(0, "dataset", self.dataset)
        text = df.to_csv(index=False)
        if path is not None:
            atomic_write_text(path, text)
        return text

    # ---- figure -----------------------------------------------------------------------
    def plot(self, path) -> None:
        """Write :meth:`figure` to ``path`` (the format from its suffix; atomically)."""
        import matplotlib.pyplot as plt

        fig = self.figure()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, format=str(path).rsplit(".", 1)[-1] if "." in str(path) else "png")
        plt.close(fig)

    def figure(self):
        """Worst-element eps with its null band (0 .. null q95) against window radius and against mesh (seaborn);
        with ``frechet``, a second row shows the W2^2 bracket (Gelbrich lower .. assignment upper bound)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import seaborn as sns

        df = self.summary("worst")
        if "radius" not in df:
            df["radius"] = self.settings.get("radius")
        if "kernel" in df:  # the aggregated test: one curve per group and kernel family (median rule, linear limit)
            df["group"] = df["group"] + " " + df["kernel"].str.split("-").str[-1]
        bracket = "frechet_distance" in df and df["frechet_distance"].notna().any()
        sns.set_theme(style="whitegrid")
        rows = 2 if bracket else 1
        fig, axes = plt.subplots(rows, 2, figsize=(11, 4 * rows), constrained_layout=True, squeeze=False)
        curves = list(dict.fromkeys(df["group"]))
        palette = dict(zip(curves, sns.color_palette(n_colors=max(1, len(curves)))))
        for col, (x, other) in enumerate((("radius", "mesh"), ("mesh", "radius"))):
            # one curve per group: at each x the finest value of the other axis (the profile's matching mesh)
            for grp, sub in df.groupby("group"):
                line = sub.sort_values(other).groupby(x, as_index=False).first().sort_values(x)
                color = palette.get(grp)
                ax = axes[0, col]
                ax.plot(line[x], line["symmetry_error"], "o-", color=color, label=grp)
                ax.fill_between(line[x], 0, line["null_q95"], color=color, alpha=0.15)
                if bracket:
                    low = line["frechet_distance"].astype(float)
                    high = line["w2_upper"].astype(float) if "w2_upper" in line else low
                    axes[1, col].fill_between(line[x], low, high, color=color, alpha=0.25, label=grp)
                    axes[1, col].plot(line[x], low, "v-", color=color, ms=4)
                    axes[1, col].plot(line[x], high, "^-", color=color, ms=4)
            for ax in axes[:, col]:
                ax.set_xscale("log", base=2)
                ax.set_xlabel("window radius (native px)" if x == "radius" else "mesh h (native px)")
            axes[0, col].axhline(0, color="0.3", lw=0.8)
            axes[0, col].set_ylabel("worst-element eps (squared MMD)")
            if bracket:
                axes[1, col].set_yscale("log")
                axes[1, col].set_ylabel("worst-element W2^2 (intensity^2 px^2)")
        axes[0, 0].set_title("scale profile (band: null up to its 95% quantile)")
        axes[0, 1].set_title("against mesh size")
        axes[0, 0].legend(title="group")
        if bracket:
            axes[1, 0].set_title("W2^2 bracket: Gelbrich lower (v) .. assignment upper (^)")
            axes[1, 1].set_title("W2^2 bracket against mesh size")
        return fig

    # ---- terminal ---------------------------------------------------------------------
    def render(self, console=None) -> None:
        """Print the report as rich tables, then one verdict line per group."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        m, s = self.meta, self.settings
        if s.get("kernels") == "aggregate":
            return self._render_aggregate(console, Table)
        console.print(
            f"[bold]{self.dataset}[/bold]"
            + (f" (preset {m['preset']})" if m.get("preset") else "")
            + f": {m.get('images')} images"
            + (f" ({m.get('skipped')} skipped)" if m.get("skipped") else "")
            + f", groups [bold]{self.group}[/bold], {s.get('windows')} windows/image of radius "
            f"{_radius(s.get('radius'))} px"
            + (" with a local-contrast channel" if s.get("contrast") else "")
            + f", MMD with {s.get('features')} random features, {_kernel(m)}; "
            f"{s.get('permutations')} null draws (p >= {m.get('p_floor', float('nan')):.2g}), one threshold per "
            f"group, Holm over {m.get('tests', '?')} groups"
        )
        df = self.to_frame()
        if "radius" not in df:
            df["radius"] = s.get("radius")
        columns = list(dict.fromkeys(zip(df["radius"], df["mesh"])))
        profile = df["radius"].nunique() > 1
        head = [f"r={r:g} h={h:g}" if profile else f"h={h:g}" for r, h in columns]
        for grp in self.groups or [self.group]:
            sub = df[df["group"] == grp]
            table = Table(
                title=f"{grp}: symmetry error eps (squared MMD, x1e-3) by " + ("radius and " * profile) + "mesh"
            )
            table.add_column("element")
            for text in head:
                table.add_column(text, justify="right")
            for name in dict.fromkeys(sub["statistic"]):
                if name in ("worst", "mean"):
                    continue
                table.add_row(name, *[_fmt(_cell(sub, c, name)) for c in columns])
            for stat in ("worst", "mean"):
                table.add_section()
                table.add_row(f"[bold]{stat}[/bold]", *[_fmt(_cell(sub, c, stat), bold=True) for c in columns])
                table.add_row("  detectable (null q95)", *[_fmt(_cell(sub, c, stat, "null_q95")) for c in columns])
                column = "p_adjusted" if stat == "worst" else "p_value"
                label = "  adjusted p" if stat == "worst" else "  p-value"
                table.add_row(label, *[_p(_cell(sub, c, stat, column)) for c in columns])
                table.add_row(
                    "  95% interval",
                    *[
                        f"{_fmt(_cell(sub, c, stat, 'ci_low'))} .. {_fmt(_cell(sub, c, stat, 'ci_high'))}"
                        for c in columns
                    ],
                )
            if "frechet_distance" in sub:
                table.add_section()
                table.add_row(
                    "[bold]W2^2 worst >=[/bold] (Gelbrich)",
                    *[_fmt(_cell(sub, c, "worst", "frechet_distance")) for c in columns],
                )
                if "w2_upper" in sub:
                    table.add_row(
                        "[bold]W2^2 worst <=[/bold] (assignment)",
                        *[_fmt(_cell(sub, c, "worst", "w2_upper")) for c in columns],
                    )
            console.print(table)
            for f in self.fits:
                if f.get("group") == grp:
                    where = f" r={f['radius']:g}" if "radius" in f else ""
                    console.print(
                        f"  h -> 0 ({f['statistic']}{where}): eps0 = {_fmt(f['eps0'])} "
                        f"[{_fmt(f['eps0_ci_low'])} .. {_fmt(f['eps0_ci_high'])}] x1e-3, "
                        f"c = {_fmt(f['c'])} x1e-3 per px^2"
                    )
        console.print(f"verdicts at alpha={self.alpha:g} (one threshold per group, Holm over the groups of this run):")
        for v in self.verdicts:
            console.print("  " + v["text"])


def _render_aggregate(self, console, table_class) -> None:
    """:meth:`SymmetryReport.render` for the aggregated test: one row per kernel and scale, then the verdicts."""
    m, s = self.meta, self.settings
    kernels = m.get("kernels", [])
    console.print(
        f"[bold]{self.dataset}[/bold]: {m.get('images')} images"
        + (f" ({m.get('skipped')} skipped)" if m.get("skipped") else "")
        + f", groups [bold]{self.group}[/bold]; the default test: {len(kernels)} kernels and scales (median-rule "
        f"Gaussian on intensity windows, linear-kernel limit on intensity + local-contrast windows), "
        f"{s.get('features')} random features each, {s.get('permutations')} null draws shared by all of them "
        f"(p >= {m.get('p_floor', float('nan')):.2g}); one threshold per group (min-p), "
        f"Holm over {m.get('tests')} groups"
    )
    df = self.to_frame()
    for grp in self.groups or [self.group]:
        sub = df[df["group"] == grp]
        table = table_class(title=f"{grp}: which kernel and scale carries the evidence (eps: squared MMD, x1e-3)")
        for name, justify in (
            ("kernel", "left"),
            ("radius", "right"),
            ("h", "right"),
            ("worst element", "left"),
            ("eps", "right"),
            ("detectable (null q95)", "right"),
            ("p alone", "right"),
            ("adjusted p", "right"),
        ):
            table.add_column(name, justify=justify)
        elements = sub[~sub["statistic"].isin(["worst", "mean", "aggregate"])]
        for _, worst in sub[sub["statistic"] == "worst"].iterrows():
            same = elements[(elements["kernel"] == worst["kernel"]) & (elements["mesh"] == worst["mesh"])]
            top = same.loc[same["symmetry_error"].idxmax()] if len(same) else None
            row = worst if top is None else top
            table.add_row(
                str(worst["kernel"]),
                f"{worst['radius']:g}",
                f"{worst['mesh']:g}",
                "-" if top is None else str(top["statistic"]),
                # the named element's own row (the verdict quotes the same p-values), not the worst-over-elements
                # statistic's, whose null and p differ
                _fmt(float(row["symmetry_error"])),
                _fmt(float(row["null_q95"])),
                _p(float(row["p_value"])),
                _p(float(row["p_adjusted"])),
            )
        console.print(table)
    console.print(f"verdicts at alpha={self.alpha:g} (aggregated over kernels and scales, Holm over groups):")
    for v in self.verdicts:
        console.print("  " + v["text"])


SymmetryReport._render_aggregate = _render_aggregate


def _kernel(meta: dict) -> str:
    """The kernel's bandwidth as the header states it: mode, standardised sigma and L2 sigma."""
    sigma, std = meta.get("bandwidth", float("nan")), meta.get("bandwidth_std", float("nan"))
    mode = meta.get("bandwidth_mode", "median")
    what = "fixed kernel" if mode == "fixed" else "median-rule kernel (per dataset)"
    per_radius = meta.get("bandwidth_per_radius")
    if per_radius and len(per_radius) > 1:  # a scale profile: one L2 sigma per radius
        stds = ",".join(f"{v:.4g}" for v in dict.fromkeys(meta.get("bandwidth_std_per_radius", [])))
        return f"{what} sigma = {stds} standardised ({','.join(f'{v:.4g}' for v in per_radius)} L2 by radius)"
    return f"{what} sigma = {std:.4g} standardised ({sigma:.4g} L2)"


def _cell(df: pd.DataFrame, where: tuple, statistic: str, column: str = "symmetry_error") -> float:
    radius, mesh = where
    keep = (df["mesh"] == mesh) & (df["statistic"] == statistic)
    if radius is not None and "radius" in df:
        keep &= df["radius"] == radius
    hit = df[keep]
    if hit.empty or column not in hit:
        return float("nan")
    value = hit[column].iloc[0]
    return float("nan") if value is None or _pandas().isna(value) else float(value)


def _radius(value) -> str:
    return ",".join(f"{r:g}" for r in value) if isinstance(value, (list, tuple)) else f"{value:g}"


def _interval(df: pd.DataFrame, where: tuple, statistic: str) -> str:
    return f"{_fmt(_cell(df, where, statistic, 'ci_low'))} .. {_fmt(_cell(df, where, statistic, 'ci_high'))}"


def _fmt(value: float, bold: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    scaled = 1e3 * value
    text = f"{scaled:.3f}" if scaled == 0 or abs(scaled) >= 0.01 else f"{scaled:.2g}"  # tiny values: 2 digits
    return f"[bold]{text}[/bold]" if bold else text


def _e3(value: float) -> str:
    """``value`` in running text: ``1.234e-3`` style, or plain scientific when tiny (never ``1.6e-05e-3``)."""
    text = _fmt(value)
    return text if text == "-" else f"{value:.2g}" if "e" in text else f"{text}e-3"


def _p(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3g}"


def _clean(obj):
    """JSON-safe copy: NaN/inf become None, tuples become lists, NumPy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---- assembly ---------------------------------------------------------------------------------


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else float("nan")


def _row(group, mesh, statistic, angle, obs, null, boot, frechet, level=0.05, upper=None) -> dict:
    row = {
        "group": group,
        "mesh": mesh,
        "statistic": statistic,
        "angle": angle,
        "symmetry_error": float(obs),
        "null_q95": _quantile(null, 0.95),
        "p_value": p_value(obs, null),
        "p_adjusted": float("nan"),
        "ci_low": _quantile(boot, level / 2),
        "ci_high": _quantile(boot, 1 - level / 2),
    }
    if frechet is not None:
        row["frechet_distance"] = float(frechet)  # W2^2 lower bound (Gelbrich), squared image-norm units
    if upper is not None:
        row["w2_upper"] = float(upper)  # W2^2 upper bound (per-image optimal assignment), same units
    return row


def assemble(name, groups, indices, union, meshes, sources, mmd, moments, settings) -> SymmetryReport:
    """The report of a run from its sums: ``mmd[group][mesh]`` statistics, ``moments[mesh]`` over the union."""
    rows, per_image, fits = [], [], []
    element_rows: list[dict] = []
    draws: dict[str, list] = {}  # group -> [(mesh, element names, eps (G-1,), null (B, G-1))] for combine_kernels
    for grp, idx, per_mesh in zip(groups, indices, mmd):
        names = grp.names
        order = len(grp) - 1
        boots = {"worst": [], "mean": []}
        for h, stats, mom in zip(meshes, per_mesh, moments):
            est = {k: v.numpy() for k, v in stats.estimate().items()}
            eps, null, boot = est["eps"][1:], est["null"][:, 1:], est["boot"][:, 1:]
            draws.setdefault(grp.name, []).append((h, names[1:], eps, null))
            frechet = mom.distances().numpy()[idx][1:] if mom is not None else None
            upper = mom.upper_bounds().numpy()[idx][1:] if mom is not None else None
            group_rows = []
            for j, el in enumerate(names[1:]):
                fr = frechet[j] if frechet is not None else None
                up = upper[j] if upper is not None else None
                group_rows.append(_row(grp.name, h, el, grp[j + 1].angle, eps[j], null[:, j], boot[:, j], fr, upper=up))
            element_rows += group_rows
            rows += group_rows
            if order == 0:  # the trivial group: nothing to compare
                eps, null, boot = np.zeros(1), np.zeros((null.shape[0], 1)), np.zeros((boot.shape[0], 1))
            level = 0.05 / max(order, 1)  # Bonferroni: simultaneous per-element intervals bound the maximum
            worst = _row(
                grp.name,
                h,
                "worst",
                float("nan"),
                eps.max(),
                null.max(1),
                [],
                None if frechet is None else (frechet.max() if len(frechet) else 0.0),
                upper=None if upper is None else (upper.max() if len(upper) else 0.0),
            )
            worst["ci_low"] = max(_quantile(boot[:, j], level / 2) for j in range(boot.shape[1]))
            worst["ci_high"] = max(_quantile(boot[:, j], 1 - level / 2) for j in range(boot.shape[1]))
            worst["_elements"] = group_rows
            mean_fr = None if frechet is None else (frechet.mean() if len(frechet) else 0.0)
            mean_up = None if upper is None else (upper.mean() if len(upper) else 0.0)
            mean = _row(
                grp.name, h, "mean", float("nan"), eps.mean(), null.mean(1), boot.mean(1), mean_fr, upper=mean_up
            )
            rows += [worst, mean]
            boots["worst"].append(boot.max(1))
            boots["mean"].append(boot.mean(1))
            for index, values in stats.per_image:
                for el, v in zip(names[1:], values[1:]):
                    per_image.append(
                        {
                            "group": grp.name,
                            "mesh": h,
                            "image": sources[index].name,
                            "element": el,
                            "self_symmetry_error": v,
                        }
                    )
        if len(set(meshes)) >= 2:
            for stat in ("worst", "mean"):
                obs = [r["symmetry_error"] for r in rows if r["statistic"] == stat and r["group"] == grp.name]
                eps0, c = fit_mesh(meshes, obs)
                lo = hi = float("nan")
                if settings.bootstrap:
                    b_eps0, _ = fit_mesh(meshes, np.stack(boots[stat]))
                    lo, hi = _quantile(b_eps0, 0.025), _quantile(b_eps0, 0.975)
                fits.append(
                    {
                        "group": grp.name,
                        "statistic": stat,
                        "eps0": float(eps0),
                        "c": float(c),
                        "eps0_ci_low": lo,
                        "eps0_ci_high": hi,
                    }
                )
    group_p = _one_threshold(rows, [(None, draws)], [g.name for g in groups])
    for r in rows:
        if r["statistic"] == "worst":
            ps = [e["p_adjusted"] for e in r.pop("_elements") if not math.isnan(e["p_adjusted"])]
            r["p_adjusted"] = min(ps) if ps else float("nan")
    report = SymmetryReport(
        dataset=name,
        group=",".join(g.name for g in groups),
        elements=[u.name for u in union],
        meshes=meshes,
        rows=rows,
        fits=fits,
        per_image=per_image,
        settings=dict(settings.__dict__),
        meta={"tests": sum(math.isfinite(p) for p, _ in group_p.values())},
        alpha=settings.alpha,
        groups=[g.name for g in groups],
    )
    images = mmd[0][0].images if mmd and mmd[0] else None
    report.verdicts = [{**_verdict(report, g.name, images), "p_value": group_p[g.name][0]} for g in groups]
    report.draws = draws  # not serialised: the null draws themselves, which combine_kernels calibrates together
    return report


def _one_threshold(
    rows: list[dict], parts: list[tuple], groups: list[str], field: str = "kernel"
) -> dict[str, tuple[float, float]]:
    """Per group, one test over all its statistics, then Holm over the groups; sets the element rows' p-values.

    ``parts`` pairs a label (the rows' ``field``: kernel name, radius; None for one run) with a report's ``draws``
    (group -> [(mesh, elements, eps, null)]). Every statistic of a group (kernel, mesh, element) uses the same random
    group element per image and null draw, so :func:`~symmetry.estimators.min_p_aggregate` calibrates the smallest
    of their p-values exactly: perfectly correlated rows (rot90 and rot270, one kernel at two meshes) cost nothing,
    where a union bound (Holm over rows) would pile the adjusted p-values of symmetric data near 1. Groups have
    different draws (their elements differ), so the groups' p-values are Holm-adjusted. Element rows get
    ``p_adjusted`` = the larger of their min-p adjusted p-value (family-wise within the group) and the group's
    Holm-adjusted p-value. Returns ``{group: (p, Holm-adjusted p)}``.
    """
    aggregated = {}
    lookup = {}
    for grp in groups:
        columns, observed, nulls = [], [], []
        for label, draws in parts:
            for h, elements, eps, null in draws.get(grp, []):
                columns += [(label, h, el) for el in elements]
                observed.append(eps)
                nulls.append(null)
        if not columns or len({n.shape[0] for n in nulls}) != 1:
            aggregated[grp] = float("nan")
            continue
        p, _, adjusted = min_p_aggregate(np.concatenate(observed), np.concatenate(nulls, axis=1))
        aggregated[grp] = p
        lookup.update({(grp, *c): float(a) for c, a in zip(columns, adjusted)})
    holm_groups = dict(zip(groups, holm([aggregated[g] for g in groups])))
    for row in rows:
        if row["statistic"] in ("worst", "mean", "aggregate"):
            continue
        key = (row["group"], row.get(field), row["mesh"], row["statistic"])
        row["p_adjusted"] = max(lookup[key], holm_groups[row["group"]]) if key in lookup else float("nan")
    return {g: (aggregated[g], float(holm_groups[g])) for g in groups}


def combine_kernels(reports: list[SymmetryReport], names: list[str]) -> SymmetryReport:
    """The aggregated test (docs/symmetry.md, "The default test"): reports of several kernels and scales of the same
    images, groups and seed, as one report whose decision per group is one statistic under one threshold.

    Every component's null draw ``b`` re-transforms image ``n`` by the same group element (stream ``null`` of
    ``(seed, n)``), so the columns (component, mesh, element) of a group share their draws and
    :func:`~symmetry.estimators.min_p_aggregate` calibrates the smallest of their p-values exactly. Per group:
    an ``aggregate`` row (``p_value``: the aggregated p; ``p_adjusted``: Holm over the run's groups, whose draws
    differ); per element row: its own ``p_value`` and ``p_adjusted`` = the larger of its min-p adjusted p
    (family-wise within the group) and the group's Holm-adjusted p, so the rows show which kernel and scale
    carried the evidence. ``worst`` rows take the smallest ``p_adjusted`` of their elements.
    """
    first = reports[0]
    rows, fits, per_image = [], [], []
    for name, rep in zip(names, reports):
        radius = float(rep.settings["radius"])
        rows += [{**row, "kernel": name, "radius": radius} for row in rep.rows]
        fits += [{**f, "kernel": name, "radius": radius} for f in rep.fits]
        per_image += [{**p, "kernel": name, "radius": radius} for p in rep.per_image]
    groups = first.groups or [first.group]
    group_p = _one_threshold(rows, [(name, getattr(rep, "draws", {})) for name, rep in zip(names, reports)], groups)
    aggregated = {g: p for g, (p, _) in group_p.items()}
    holm_groups = dict(zip(groups, holm([aggregated[g] for g in groups])))
    for row in rows:
        if row["statistic"] == "worst":
            ps = [
                e["p_adjusted"]
                for e in rows
                if e["statistic"] not in ("worst", "mean")
                and (e["group"], e["kernel"], e["mesh"]) == (row["group"], row["kernel"], row["mesh"])
                and not math.isnan(e["p_adjusted"])
            ]
            row["p_adjusted"] = min(ps) if ps else float("nan")
    for grp in groups:
        rows.append(
            {
                "group": grp,
                "mesh": float("nan"),
                "statistic": "aggregate",
                "angle": float("nan"),
                "symmetry_error": float("nan"),
                "null_q95": float("nan"),
                "p_value": aggregated[grp],
                "p_adjusted": float(holm_groups[grp]),
                "ci_low": float("nan"),
                "ci_high": float("nan"),
                "kernel": "aggregate",
                "radius": float("nan"),
            }
        )
    kernels = [
        {
            "kernel": name,
            "radius": float(rep.settings["radius"]),
            "meshes": list(rep.meshes),
            "windows": rep.settings.get("windows"),
            "contrast": bool(rep.settings.get("contrast")),
            "bandwidth_mode": rep.meta.get("bandwidth_mode"),
            "bandwidth_std": rep.meta.get("bandwidth_std"),
            "bandwidth": rep.meta.get("bandwidth"),
        }
        for name, rep in zip(names, reports)
    ]
    settings = {**first.settings, "kernels": "aggregate"}
    for key in ("radius", "windows", "bandwidth", "contrast"):
        settings[key] = [rep.settings.get(key) for rep in reports]
    report = SymmetryReport(
        dataset=first.dataset,
        group=first.group,
        elements=first.elements,
        meshes=sorted({float(h) for rep in reports for h in rep.meshes}, reverse=True),
        rows=rows,
        fits=fits,
        per_image=per_image,
        settings=settings,
        meta={
            **{k: v for k, v in first.meta.items() if not k.startswith("bandwidth")},
            "kernels": kernels,
            "tests": sum(math.isfinite(p) for p in aggregated.values()),
            "statistics": sum(1 for r in rows if r["statistic"] not in ("worst", "mean", "aggregate")),
            "seconds": round(sum(rep.meta.get("seconds", 0.0) for rep in reports), 3),
        },
        alpha=first.alpha,
        groups=first.groups,
    )
    report.verdicts = [_aggregate_verdict(report, g, aggregated[g], holm_groups[g], len(names)) for g in groups]
    return report


def _aggregate_verdict(report, group, p, adjusted, components) -> dict:
    """One line per group of the aggregated test: the decision, and the kernel and scale that carried the evidence."""
    if not math.isfinite(adjusted):
        return {
            "group": group,
            "symmetric": None,
            "p_adjusted": float("nan"),
            "text": f"{group}: no verdict (no null distribution: trivial group or no permutations)",
        }
    elements = [r for r in report.rows if r["group"] == group and r["statistic"] not in ("worst", "mean", "aggregate")]
    best = min(elements, key=lambda r: (r["p_value"], -r["symmetry_error"]))
    symmetric = bool(adjusted >= report.alpha)
    where = f"{best['kernel']} {best['statistic']} at h={best['mesh']:g}"
    family = f"{components} kernels and scales, one threshold; Holm over {report.meta.get('tests')} groups"
    if symmetric:
        text = (
            f"{group}: no asymmetry detected (aggregated p = {p:.3g}, adjusted {adjusted:.3g}; {family}); "
            f"the strongest evidence, {where}, has p = {best['p_value']:.3g} alone"
        )
    else:
        text = (
            f"{group}: NOT symmetric (aggregated p = {p:.3g}, adjusted {adjusted:.3g}; {family}); carried by {where} "
            f"(p = {best['p_value']:.3g}, eps = {_fmt(best['symmetry_error'])}e-3 against a detectable "
            f"{_fmt(best['null_q95'])}e-3)"
        )
    return {
        "group": group,
        "symmetric": symmetric,
        "p_adjusted": float(adjusted),
        "p_value": float(p),
        "element": best["statistic"],
        "kernel": best["kernel"],
        "mesh": best["mesh"],
        "text": text,
    }


def combine(reports: list[SymmetryReport], radii) -> SymmetryReport:
    """Reports of several window radii (a scale profile) as one: one threshold per group over every radius, mesh and
    element (:func:`_one_threshold`; the radii share their null draws), Holm over the groups."""
    first = reports[0]
    rows, fits, per_image = [], [], []
    for r, rep in zip(radii, reports):
        rows += [{**row, "radius": float(r)} for row in rep.rows]
        fits += [{**f, "radius": float(r)} for f in rep.fits]
        per_image += [{**p, "radius": float(r)} for p in rep.per_image]
    elements = [row for row in rows if row["statistic"] not in ("worst", "mean")]
    groups = first.groups or [first.group]
    parts = [(float(r), getattr(rep, "draws", {})) for r, rep in zip(radii, reports)]
    group_p = _one_threshold(rows, parts, groups, field="radius")  # one threshold per group over every radius
    for row in rows:
        if row["statistic"] == "worst":
            ps = [
                e["p_adjusted"]
                for e in elements
                if (e["group"], e["mesh"], e["radius"]) == (row["group"], row["mesh"], row["radius"])
                and not math.isnan(e["p_adjusted"])
            ]
            row["p_adjusted"] = min(ps) if ps else float("nan")
    meshes = sorted({row["mesh"] for row in rows}, reverse=True)
    report = SymmetryReport(
        dataset=first.dataset,
        group=first.group,
        elements=first.elements,
        meshes=meshes,
        rows=rows,
        fits=fits,
        per_image=per_image,
        settings={**first.settings, "radius": [float(r) for r in radii]},
        meta={
            **first.meta,
            "tests": sum(math.isfinite(p) for p, _ in group_p.values()),
            "seconds": sum(rep.meta.get("seconds", 0.0) for rep in reports),
            # the median rule picks one kernel per radius; a fixed kernel has one standardised sigma for all
            "bandwidth_per_radius": [rep.meta.get("bandwidth") for rep in reports],
            "bandwidth_std_per_radius": [rep.meta.get("bandwidth_std") for rep in reports],
        },
        alpha=first.alpha,
        groups=first.groups,
    )
    report.verdicts = [
        {**_verdict(report, g, first.meta.get("images")), "p_value": group_p[g][0]} for g in first.groups
    ]
    return report


def _verdict(report: SymmetryReport, group: str, images: int | None = None) -> dict:
    """One line per group: rejected or not at alpha after Holm, where, and what the run could have detected."""
    rows = [r for r in report.rows if r["group"] == group and r["statistic"] not in ("worst", "mean")]
    worst = [r for r in report.rows if r["group"] == group and r["statistic"] == "worst"]
    finest = min(worst, key=lambda r: r["mesh"]) if worst else None
    tested = [r for r in rows if not math.isnan(r["p_adjusted"])]
    if not tested:
        return {
            "group": group,
            "symmetric": None,
            "p_adjusted": float("nan"),
            "text": f"{group}: no verdict (no null distribution: trivial group or no permutations)",
        }
    best = min(tested, key=lambda r: (r["p_adjusted"], -r["symmetry_error"]))
    p = best["p_adjusted"]
    symmetric = bool(p >= report.alpha)
    detectable = finest["null_q95"] if finest else float("nan")
    needed = None
    if symmetric:
        text = (
            f"{group}: no asymmetry detected (smallest adjusted p = {p:.3g}); this run could detect eps above "
            f"{_e3(detectable)} at h={finest['mesh']:g} (null q95 of the worst element)"
        )
        top = max(rows, key=lambda r: r["symmetry_error"])
        if images and top["symmetry_error"] > 0 and top["null_q95"] > 0:
            # the null of a degenerate U-statistic shrinks like 1/n: n images detect about eps >= q95 * images / n
            # (a lower estimate: the Holm adjustment over the run's tests asks for a higher quantile than q95)
            needed = max(images + 1, math.ceil(images * top["null_q95"] / top["symmetry_error"]))
            text += (
                f"; if the observed {top['statistic']} error ({_e3(top['symmetry_error'])} at h={top['mesh']:g}) "
                f"is real, at least about {needed} images would be needed to detect it"
            )
    else:
        text = (
            f"{group}: NOT symmetric (adjusted p = {p:.3g} for {best['statistic']} at h={best['mesh']:g}, "
            f"eps = {_e3(best['symmetry_error'])} against a detectable {_e3(best['null_q95'])})"
        )
    return {
        "group": group,
        "symmetric": symmetric,
        "p_adjusted": p,
        "element": best["statistic"],
        "mesh": best["mesh"],
        "detectable": detectable,
        "images_needed": needed,
        "text": text,
    }
