"""The result of a symmetry measurement: tidy tables, JSON/CSV output and a terminal rendering."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import pandas as pd

from symmetry.io import atomic_write_text


@dataclass
class SymmetryReport:
    """Symmetry error ``eps_G(h)`` of a dataset for a group, per element and mesh size (theory.md, section 4).

    ``rows`` holds one dict per (mesh, statistic): ``statistic`` is an element name, or
    ``worst`` (``eps_G = max_A``) or ``mean`` over the non-identity elements. Columns:
    ``symmetry_error`` (unbiased squared MMD), ``null_q95`` (95% quantile of the
    permutation null: the noise floor), ``p_value``, ``ci_low``/``ci_high`` (95% bootstrap
    interval over images), ``frechet_distance`` (when requested). ``fits`` holds the
    ``eps0 + c h^2`` extrapolation per summary statistic.
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

    # ---- tables -------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per (mesh, element or summary statistic), with a boolean ``symmetric`` (p >= alpha)."""
        df = pd.DataFrame(self.rows)
        df["symmetric"] = df["p_value"] >= self.alpha
        return df

    def summary(self, statistic: str = "worst") -> pd.DataFrame:
        """The ``worst`` (eps_G) or ``mean`` rows, one per mesh."""
        df = self.to_frame()
        return df[df["statistic"] == statistic].reset_index(drop=True)

    def fit(self, statistic: str = "worst") -> dict | None:
        """The ``eps0 + c h^2`` fit of a summary statistic, or None with a single mesh."""
        return next((f for f in self.fits if f["statistic"] == statistic), None)

    def per_image_frame(self) -> pd.DataFrame:
        """Per-image self-symmetry error ``|d_n(A)|^2 / m_n^2`` (biased, includes the noise floor)."""
        return pd.DataFrame(self.per_image)

    def symmetry_error(self, mesh: float | None = None, statistic: str = "worst") -> float:
        """``eps_G(h)`` at one mesh (the finest when omitted)."""
        mesh = min(self.meshes) if mesh is None else mesh
        df = self.summary(statistic) if statistic in ("worst", "mean") else self.to_frame()
        row = df[(df["mesh"] == mesh) & (df["statistic"] == statistic)]
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
        df.insert(0, "group", self.group)
        df.insert(0, "dataset", self.dataset)
        text = df.to_csv(index=False)
        if path is not None:
            atomic_write_text(path, text)
        return text

    # ---- terminal ---------------------------------------------------------------------
    def render(self, console=None) -> None:
        """Print the report as rich tables."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        m = self.meta
        s = self.settings
        console.print(
            f"[bold]{self.dataset}[/bold]: {m.get('images')} images"
            + (f" ({m.get('skipped')} skipped)" if m.get("skipped") else "")
            + f", group [bold]{self.group}[/bold] ({len(self.elements)} elements), "
            f"{s.get('windows')} windows/image of radius {s.get('radius'):g} px, "
            f"MMD with {s.get('features')} random features, bandwidth {m.get('bandwidth', float('nan')):.4g}"
        )
        df = self.to_frame()
        table = Table(title=f"symmetry error eps (squared MMD, x1e-3) by mesh size h, {self.group}")
        table.add_column("element")
        for h in self.meshes:
            table.add_column(f"h={h:g}", justify="right")
        for name in self.elements[1:]:
            table.add_row(name, *[_fmt(_cell(df, h, name)) for h in self.meshes])
        for stat in ("worst", "mean"):
            table.add_section()
            table.add_row(f"[bold]{stat}[/bold]", *[_fmt(_cell(df, h, stat), bold=True) for h in self.meshes])
            table.add_row(f"  null q95 ({stat})", *[_fmt(_cell(df, h, stat, "null_q95")) for h in self.meshes])
            table.add_row(f"  p-value ({stat})", *[_p(_cell(df, h, stat, "p_value")) for h in self.meshes])
            table.add_row(
                f"  95% CI ({stat})",
                *[
                    f"{_fmt(_cell(df, h, stat, 'ci_low'))} .. {_fmt(_cell(df, h, stat, 'ci_high'))}"
                    for h in self.meshes
                ],
            )
        if "frechet_distance" in df:
            table.add_section()
            table.add_row(
                "[bold]Frechet worst[/bold]", *[_fmt(_cell(df, h, "worst", "frechet_distance")) for h in self.meshes]
            )
        console.print(table)
        for f in self.fits:
            console.print(
                f"h -> 0 ({f['statistic']}): eps0 = {_fmt(f['eps0'])} "
                f"[{_fmt(f['eps0_ci_low'])} .. {_fmt(f['eps0_ci_high'])}] x1e-3, c = {_fmt(f['c'])} x1e-3 per px^2"
            )
        worst = self.summary("worst")
        verdicts = ", ".join(
            f"h={r.mesh:g}: {'symmetric' if r.symmetric else 'NOT symmetric'} (p={r.p_value:.3g})"
            for r in worst.itertuples()
        )
        console.print(f"verdict at alpha={self.alpha:g} ({self.group}, worst element): {verdicts}")


def _cell(df: pd.DataFrame, mesh: float, statistic: str, column: str = "symmetry_error") -> float:
    hit = df[(df["mesh"] == mesh) & (df["statistic"] == statistic)]
    return float(hit[column].iloc[0]) if not hit.empty and column in hit else float("nan")


def _fmt(value: float, bold: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = f"{1e3 * value:.3f}"
    return f"[bold]{text}[/bold]" if bold else text


def _p(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def _clean(obj):
    """JSON-safe copy: NaN/inf become None, tuples become lists."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
