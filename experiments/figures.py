"""``python -m experiments.figures [NAME ...]``: draw every figure from stored results into ``figures/``."""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import sys
from pathlib import Path

from experiments.runner import (
    DEFAULT_RESULTS,
    EXPERIMENTS,
    cell_key,
    check_cell_columns,
    experiment_module,
    has_digests,
    load_config,
    read_results,
    reading_results,
    results_path,
)
from experiments.style import save_figure, seeded_global_rng
from symmetry.errors import UsageError
from symmetry.io import output_lock
from symmetry.runtime import CliParser, cli_entry


def check_output_dir(out: str | Path) -> Path:
    """``out`` is (or can become) a writable folder; otherwise a one-line :class:`UsageError` before any work."""
    import os
    import tempfile

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the figures")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write figures into {out}: {probe} is not a writable folder")
    try:  # a real probe: /proc or a read-only mount pass os.access as root
        with tempfile.NamedTemporaryFile(prefix=".figures.", suffix=".probe", dir=probe):
            pass
    except OSError as err:
        raise UsageError(f"cannot write figures into {out}: cannot create files in {probe} ({err.strerror})") from None
    return out


def make_figures(
    name: str, scale: str = "quick", results: str | Path = DEFAULT_RESULTS, out: str | Path = "figures"
) -> list[Path]:
    """Draw experiment ``name``'s figures from its stored results; returns the files written."""
    module = experiment_module(name)
    config = load_config(name, scale)
    path = results_path(name, scale, results)
    frame = read_results(name, scale, results)
    if not has_digests(path):
        print(
            f"note: {path} predates row digests, so edits of it cannot be detected; it gets them the next time "
            "experiments.run stores a cell in it",
            file=sys.stderr,
        )
    cells = module.cells(config)
    check_cell_columns(path, frame, cells)
    keys = {cell_key(c) for c in cells}
    frame = frame[frame["cell"].isin(keys)]
    if frame.empty:
        raise UsageError(f"{path} holds no rows for the current {scale} config; rerun")
    missing = len(keys - set(frame["cell"]))
    if missing:
        print(f"note: {name}: {missing} of {len(keys)} cells are not in {path}; the figures omit them", file=sys.stderr)
    paths = []
    with reading_results(path), seeded_global_rng():  # drawing happens in savefig: a bad value may surface there
        for key, fig in module.figures(frame.reset_index(drop=True), config).items():
            paths += save_figure(fig, out, f"{name}-{key}")
    return paths


@cli_entry
def main(argv=None) -> int:
    p = CliParser(prog="python -m experiments.figures", description=__doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help=f"experiments (default: all): {', '.join(EXPERIMENTS)}")
    p.add_argument("--scale", choices=("quick", "full"), default="quick", help="which stored results (default quick)")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results folder (default: results)")
    p.add_argument("--out", default="figures", help="output folder (default: figures)")
    args = p.parse_args(argv)
    check_output_dir(args.out)
    names = args.names or [n for n in EXPERIMENTS if results_path(n, args.scale, args.results).exists()]
    if not names:
        raise UsageError(f"no results under {args.results}/; run `python -m experiments.run all --quick` first")
    with output_lock(args.out):  # one drawer per figures folder
        for name in names:
            for path in make_figures(name, args.scale, args.results, args.out):
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
