"""``python -m experiments.sr_benchmark_workers --quick``: one worker process computing ``sr_benchmark`` cells.

Start several (one per core) to compute cells in parallel; each claims a pending cell by creating
``results/sr_benchmark/work/claims/<cell>.claim`` (exclusively, holding its pid), computes it with
:func:`experiments.sr_benchmark.run_cell` (which caches the rows under ``work/cells/``) and moves on. A claim
whose process is gone is taken over; an ``sa`` or ``tl-cont`` cell waits until its ``tl`` cell is cached. Afterwards
``python -m experiments.run sr_benchmark --quick`` gathers the cached cells into ``results/sr_benchmark/quick.csv``
without recomputing them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from experiments import sr_benchmark
from experiments.runner import DEFAULT_RESULTS, Context, SkipCell, cell_key, load_config
from symmetry.datasets import data_root
from symmetry.errors import UsageError
from symmetry.runtime import CliParser, cli_entry

NAME = "sr_benchmark"
POLL_SECONDS = 20.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(path: Path) -> bool:
    """Create ``path`` exclusively with this pid; a claim of a dead process is taken over. True if claimed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                return False
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return True
    return False


def work(config: dict, ctx: Context, *, exclude: tuple[str, ...] = (), log=print, poll: float = POLL_SECONDS) -> int:
    """Compute pending cells until none is left that this worker may take; returns the number computed."""
    order = {m: i for i, m in enumerate(sr_benchmark.MODELS)}
    cells = [c for c in sr_benchmark.cells(config) if c["model"] not in exclude]
    cells.sort(key=lambda c: (c.get("seed", -1), order.get(c["model"], -1)))  # seed by seed: partial grids balance
    claims = ctx.workdir / "claims"
    done = 0
    while True:
        pending = [c for c in cells if not sr_benchmark._cache_path(c, ctx).exists()]
        if not pending:
            return done
        progressed = False
        for cell in pending:
            if cell["model"] in sr_benchmark.FROM_TL:
                tl = sr_benchmark.tl_cell_of(cell)
                if not sr_benchmark._cache_path(tl, ctx).exists():
                    continue  # its tl cell is not finished (training it here would race the worker that is)
            key = cell_key(cell)
            path = claims / f"{key}.claim"
            if not claim(path):
                continue
            try:
                if sr_benchmark._cache_path(cell, ctx).exists():
                    continue
                start = time.time()
                log(f"{time.strftime('%H:%M:%S')} start {cell['model']} seed {cell.get('seed', '-')} ({key})")
                try:
                    sr_benchmark.run_cell(cell, ctx)
                except SkipCell as why:
                    log(f"skipped {cell['model']}: {why}")
                    cells.remove(cell)
                    continue
                log(f"{time.strftime('%H:%M:%S')} done {cell['model']} seed {cell.get('seed', '-')} "
                    f"in {time.time() - start:.0f} s")  # fmt: skip
                done += 1
                progressed = True
                break  # re-read the pending list: another worker may have finished cells meanwhile
            finally:
                path.unlink(missing_ok=True)
        if not progressed:
            time.sleep(poll)  # every pending cell is claimed or waits for its tl cell


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m experiments.sr_benchmark_workers", description=__doc__.split("\n")[0])
    scale = p.add_mutually_exclusive_group()
    scale.add_argument("--quick", dest="scale", action="store_const", const="quick")
    scale.add_argument("--full", dest="scale", action="store_const", const="full")
    p.set_defaults(scale="quick")
    p.add_argument("--config", help="a TOML file with [quick]/[full] tables replacing the packaged config")
    p.add_argument("--results", default=str(DEFAULT_RESULTS), help="results folder (default: results)")
    p.add_argument("--data-root", help="folder with rain100l/ and sr_benchmarks/ (default: ../shared/data)")
    p.add_argument("--exclude", default="", help="comma-separated models this worker leaves alone (e.g. sa)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(NAME, args.scale, args.config)
    sr_benchmark.check_config(config)
    exclude = tuple(m for m in args.exclude.split(",") if m)
    bad = [m for m in exclude if m not in sr_benchmark.MODELS]
    if bad:
        raise UsageError(f"--exclude {','.join(bad)}: not a model of sr_benchmark ({', '.join(sr_benchmark.MODELS)})")
    root = data_root(args.data_root)
    ctx = Context(device=torch.device(args.device), data_root=root, workdir=Path(args.results) / NAME / "work")
    torch.set_num_threads(1)
    n = work(config, ctx, exclude=exclude, log=lambda s: print(s, flush=True))
    print(f"worker {os.getpid()}: {n} cell(s) computed; none left to take", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
