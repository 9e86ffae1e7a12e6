"""``python -m experiments.run NAME|all [--quick|--full]``: compute (or resume) experiments into ``results/NAME/``.

The quick scale is the default (as in ``experiments.figures``); ``--full`` is the paper scale."""

from __future__ import annotations

from symmetry import interrupt

interrupt.install(__name__)  # first, before the imports below (seconds): a Ctrl-C while they run ends quietly
# ruff: noqa: E402 - the imports follow the Ctrl-C handler on purpose

import argparse
import sys

from experiments.runner import (
    DEFAULT_RESULTS,
    EXPERIMENTS,
    cell_key,
    experiment_module,
    load_config,
    reading_results,
    results_path,
    run_experiment,
)
from symmetry.errors import UsageError
from symmetry.locations import DATA_ROOT_HELP
from symmetry.runtime import CliParser, cli_entry, set_threads


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m experiments.run", description=__doc__)
    p.add_argument("names", nargs="+", metavar="NAME", help=f"experiment(s): {', '.join(EXPERIMENTS)} or all")
    scale = p.add_mutually_exclusive_group()
    scale.add_argument(
        "--quick", dest="scale", action="store_const", const="quick", help="minutes on a laptop CPU (default)"
    )
    scale.add_argument(
        "--full", dest="scale", action="store_const", const="full", help="paper scale (GPU hours; see configs/)"
    )
    p.set_defaults(scale="quick")  # as experiments.figures: a bare command never starts hours of work
    p.add_argument("--config", help="a TOML file with [quick]/[full] tables replacing experiments/configs/NAME.toml")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results folder (default: results)")
    p.add_argument("--data-root", help=DATA_ROOT_HELP)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--force", action="store_true", help="recompute cells already stored")
    p.add_argument("--max-cells", type=int, help="stop after this many new cells (resume later)")
    p.add_argument("--threads", type=int, help="CPU threads of this process (default: $OMP_NUM_THREADS, else 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    if args.max_cells is not None and args.max_cells < 0:
        raise UsageError(f"--max-cells must be >= 0, got {args.max_cells}")
    for name in args.names:  # every name is checked, "all" included: `all nonesuch` is a typo, not "all"
        if name != "all":
            experiment_module(name)
    names = list(EXPERIMENTS) if "all" in args.names else list(dict.fromkeys(args.names))
    modules = {name: experiment_module(name) for name in names}  # fail on a bad name before any work
    for name, module in modules.items():
        config = load_config(name, args.scale, args.config)
        frame = run_experiment(
            name,
            args.scale,
            out=args.results,
            config=config,
            device=args.device,
            data_root=args.data_root,
            force=args.force,
            progress=not args.quiet and sys.stderr.isatty(),
            max_cells=args.max_cells,
        )
        if hasattr(module, "verdict") and len(frame):
            with reading_results(results_path(name, args.scale, args.results)):
                text = module.verdict(frame, config)
            total = len({cell_key(c) for c in module.cells(config)})
            have = frame["cell"].nunique()
            partial = f" [from {have} of {total} cells: the others are not computed]" if have < total else ""
            print(f"{name}: {text}{partial}")
    return 0


if __name__ == "__main__":
    sys.exit(interrupt.run(main))
