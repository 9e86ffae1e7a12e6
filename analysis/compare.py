"""Compare training runs: ``python -m analysis.compare runs/* [--csv FILE] [--markdown FILE]``.

One row per run directory: model, group, task, parameters, PSNR, SSIM, equivariance
error (worst over the group of ``metrics.json``) and training time per step. Scores come
from ``metrics.json`` (``python -m analysis.evaluate RUN``); runs not evaluated yet show
their configuration and time per step only.
"""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from analysis.config import CliParser
from analysis.rundir import CONFIG_FILE, METRICS_FILE, RUN_FILES, read_json_object, read_log
from symmetry.errors import DataError, UsageError
from symmetry.io import atomic_write_text, check_distinct_outputs, check_writable, output_lock
from symmetry.runtime import cli_entry

COLUMNS = [
    "run",
    "model",
    "group",
    "task",
    "params",
    "psnr",
    "ssim",
    "input_psnr",
    "eq_group",
    "eq_worst",
    "eq_mean",
    "time_per_step_s",
    "steps",
]
HEADERS = {
    "run": "run",
    "model": "model",
    "group": "group",
    "task": "task",
    "params": "params",
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "input_psnr": "input PSNR",
    "eq_group": "eq. group",
    "eq_worst": "eq. error",
    "eq_mean": "eq. error (mean)",
    "time_per_step_s": "s/step",
    "steps": "steps",
}


def _task_label(cfg: dict) -> str:
    if cfg.get("task") == "sr":
        return f"sr x{cfg.get('scale')}"
    if cfg.get("task") == "denoise":
        return f"denoise s{cfg.get('sigma'):g}" if isinstance(cfg.get("sigma"), (int, float)) else "denoise"
    return str(cfg.get("task"))


def _time_per_step(run: Path) -> tuple[float, int]:
    df = read_log(run)  # a damaged log is a DataError naming the file
    if df.empty:
        return math.nan, 0
    steps = int(df["step"].iloc[-1])
    return float(df["time_s"].iloc[-1]) / max(1, steps), steps


def run_row(run: str | Path) -> dict:
    """The comparison row of one run directory (:class:`DataError` when it is not one)."""
    run = Path(run)
    cfg_path = run / CONFIG_FILE
    if not cfg_path.is_file():
        raise NotARun(f"{run} is not a run directory (no {CONFIG_FILE})")
    cfg = read_json_object(cfg_path, "run config")
    metrics_path = run / METRICS_FILE
    metrics = read_json_object(metrics_path, "metrics file") if metrics_path.exists() else {}
    per_step, steps = _time_per_step(run)
    eq = metrics.get("equivariance", {})
    if not isinstance(eq, dict):
        raise DataError(f"metrics file {metrics_path}: 'equivariance' must be an object; rerun analysis.evaluate")

    def num(value):
        """A number of metrics.json (``None`` -> NaN, ``"inf"`` -> inf: the rule of :func:`symmetry.io.json_safe`)."""
        if value is None:
            return math.nan
        try:
            return float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"metrics file {metrics_path} holds a non-number {value!r}; rerun analysis.evaluate"
            ) from None

    return {
        "run": str(run),
        "model": cfg.get("model"),
        "group": cfg.get("group"),
        "task": _task_label(cfg),
        "params": metrics.get("params"),
        "psnr": num(metrics.get("psnr")),
        "ssim": num(metrics.get("ssim")),
        "input_psnr": num(metrics.get("input_psnr")),
        "eq_group": eq.get("group"),
        "eq_worst": num(eq.get("worst")),
        "eq_mean": num(eq.get("mean")),
        "time_per_step_s": num(metrics.get("time_per_step_s")) if metrics.get("time_per_step_s") else per_step,
        "steps": metrics.get("steps", steps),
    }


class NotARun(DataError):
    """A path without ``config.json``."""


def check_not_a_run_file(path: str, option: str, runs) -> None:
    """Refuse an output that is one of a compared run's own files (``run/metrics.json``): it would be replaced."""
    target = Path(path).resolve()
    for run in runs:
        if target.parent == Path(run).resolve() and target.name in RUN_FILES:
            raise UsageError(f"{option} {path} is a file of the run {run} itself; write the table elsewhere")


def collect(runs, *, skip_invalid: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Rows of every run; runs that cannot be read are skipped (returned as ``path: reason``) or raise."""
    rows, skipped = [], []
    for run in runs:
        try:
            rows.append(run_row(run))
        except DataError as err:
            if not skip_invalid:
                raise
            skipped.append(f"{run}: {err}" if not isinstance(err, NotARun) else f"{run}: not a run directory")
    df = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("params", "steps"):
        df[col] = df[col].astype("Int64")
    return df, skipped


TABLE_COLUMNS = ["run", "model", "group", "task", "params", "psnr", "ssim", "eq_worst", "time_per_step_s", "steps"]
"""Columns of the printed table (the CSV and Markdown files have all of :data:`COLUMNS`)."""


def _cell(col: str, value) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if col in ("psnr", "input_psnr"):
        return f"{value:.2f}"
    if col == "ssim":
        return f"{value:.4f}"
    if col in ("eq_worst", "eq_mean"):
        return f"{value:.3g}"
    if col == "time_per_step_s":
        return f"{value:.3g}"
    if col == "params":
        return f"{int(value):,}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    head = [HEADERS[c] for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(c, row[c]) for c in df.columns) + " |")
    return "\n".join(lines) + "\n"


def render(df: pd.DataFrame) -> None:
    from rich.console import Console
    from rich.table import Table

    groups = sorted({g for g in df["eq_group"].dropna()})
    title = f"{len(df)} run(s); equivariance error: worst element of {', '.join(groups) or '-'}"
    table = Table(title=title)
    for c in TABLE_COLUMNS:
        table.add_column(HEADERS[c], justify="left" if c in ("run", "model", "group", "task") else "right")
    for _, row in df.iterrows():
        table.add_row(*(_cell(c, row[c]) for c in TABLE_COLUMNS))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(
        prog="python -m analysis.compare",
        description="One table of training runs: model, group, task, parameters, PSNR, SSIM, equivariance error, "
        "time per step (scores from each run's metrics.json).",
    )
    p.add_argument("runs", nargs="+", help="run directories (e.g. runs/*)")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write the table as CSV")
    p.add_argument("--markdown", default=None, metavar="PATH", help="also write the table as Markdown")
    p.add_argument("--sort", default=None, choices=COLUMNS, help="sort rows by this column")
    p.add_argument("--quiet", action="store_true", help="do not print the table")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_distinct_outputs(csv=args.csv, markdown=args.markdown)
    for option in ("csv", "markdown"):
        if getattr(args, option):
            check_not_a_run_file(getattr(args, option), f"--{option}", args.runs)
            check_writable(getattr(args, option), f"--{option}")
    with output_lock(args.csv, args.markdown):  # another compare writing these files: fail at once
        df, skipped = collect(args.runs)
        for why in skipped:
            print(f"note: skipped {why}", file=sys.stderr)
        if df.empty:
            raise UsageError(f"none of the {len(args.runs)} path(s) is a readable run directory")
        if args.sort:
            df = df.sort_values(args.sort, ascending=args.sort not in ("psnr", "ssim", "input_psnr"), kind="stable")
        not_evaluated = df.loc[df["psnr"].isna(), "run"].tolist()
        if not args.quiet:
            render(df)
            if not_evaluated:
                print(
                    f"not evaluated yet (python -m analysis.evaluate RUN): {', '.join(not_evaluated)}", file=sys.stderr
                )
        if args.csv:
            atomic_write_text(args.csv, df.to_csv(index=False))
        if args.markdown:
            atomic_write_text(args.markdown, to_markdown(df))
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
