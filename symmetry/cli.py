"""``python -m symmetry.measure``: the command line of the symmetry measurement.

Defaults come from :class:`symmetry.settings.Settings` (and the module constants beside it); an option
left out is passed as ``None`` and the API fills it in, so no default is written twice. Bad options give
one ``error: ...`` line and exit code 2 (data problems: 1), without argparse's usage block.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import fields

import torch

from symmetry import budget
from symmetry import settings as defaults
from symmetry.datasets import DATA_ROOT_HELP, list_datasets
from symmetry.decoders import IMAGE_EXTENSIONS
from symmetry.errors import SymmetryError, UsageError
from symmetry.groups import EXAMPLE_GROUPS, GROUP_NAMES_HELP, get_group
from symmetry.io import check_outputs_apart_from_inputs, check_plot_format, check_writable
from symmetry.measurement import measure_dataset
from symmetry.runtime import DistInfo, broadcast_object, cli_entry, resolve_device, set_threads, setup_distributed
from symmetry.settings import Settings

_DEFAULT = {f.name: f.default for f in fields(Settings)}


class _Parser(argparse.ArgumentParser):
    """argparse that raises a UsageError (one line, exit 2) instead of printing its usage block."""

    def error(self, message: str):
        raise UsageError(f"{message} (see --help)")


def _meshes(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mesh takes comma-separated numbers like 2,1,0.5, got {text!r}") from None


def _bandwidth(text: str) -> float | str:
    if text.strip().lower() == "median":
        return "median"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--bandwidth takes 'median' or a number in standardised units (e.g. 0.1), got {text!r}"
        ) from None


def _default(name: str) -> str:
    return f"(default: {_DEFAULT[name]})"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m symmetry.measure",
        description="Estimate a dataset's non-strict symmetry error eps_G(h) per group, element and mesh size "
        "(squared kernel MMD between windows and transformed windows, an exact randomisation null with "
        "one threshold per group over every kernel, scale and element (min-p), Holm over groups, bootstrap "
        "intervals and the eps0 + c*h^2 extrapolation; by default an aggregated test over six kernels and scales).",
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        default=defaults.DATASET,
        help=f"skimage, folder:PATH, div2k, rain100l or synthetic:FAMILY[,k=v]; see --list-datasets "
        f"(default: {defaults.DATASET})",
    )
    d.add_argument("--data-root", default=None, help=DATA_ROOT_HELP)
    d.add_argument("--download", action="store_true", help="download the dataset if missing (div2k)")
    d.add_argument(
        "--split",
        default=None,
        help="split of a dataset that has them (rain100l, div2k): train, valid or test (default: train, and the "
        "output says so; Rain100L's test split is the one papers report)",
    )
    d.add_argument("--channels", default="gray", choices=["gray", "rgb"], help="luma (BT.601) or RGB windows")
    d.add_argument("--augment", default=None, metavar="GROUP", help="close the dataset under a grid-exact group first")
    d.add_argument("--max-images", type=int, default=None, help="use only the first N images (N >= 1)")
    d.add_argument("--skip-bad", action="store_true", help="skip unreadable or too-small images and count them")
    m = p.add_argument_group("measurement")
    m.add_argument(
        "--group",
        default=",".join(defaults.GROUPS),
        help=f"groups, comma-separated: {GROUP_NAMES_HELP}; see --list-groups (default: {','.join(defaults.GROUPS)})",
    )
    m.add_argument(
        "--preset",
        choices=list(defaults.PRESETS),
        help="recommended settings by name; options given explicitly override them. photos: natural photographs, "
        "to decide a group (radius 16 at mesh 4, a local-contrast channel, the linear-kernel limit; "
        "docs/symmetry.md, 'Power on Rain100L')",
    )
    m.add_argument(
        "--kernels",
        choices=list(defaults.KERNELS),
        help="aggregate (default): one test over several kernels and scales (median-rule Gaussian and linear-kernel "
        "limit with a contrast channel, radii 8, 16, 32 px) under one threshold; single: one kernel, set by --radius, "
        "--bandwidth, --contrast, --windows (giving any of these selects single)",
    )
    m.add_argument(
        "--mesh",
        type=_meshes,
        default=None,
        help="mesh sizes h in native pixels, comma-separated "
        f"(default: the preset's, else {','.join(f'{h:g}' for h in defaults.MESHES)})",
    )
    m.add_argument(
        "--radius",
        help="window radius in native pixels, fixed across meshes; several (4,8,16,32,64) give a scale profile, "
        f"each radius r at meshes h*r/8 {_default('radius')}",
    )
    m.add_argument("--windows", type=int, help=f"windows per image and mesh {_default('windows')}")
    m.add_argument("--features", type=int, help=f"random Fourier features {_default('features')}")
    m.add_argument(
        "--bandwidth",
        type=_bandwidth,
        help="Gaussian kernel sigma: 'median' (per-dataset median rule) or a fixed kernel in standardised units, the "
        "RMS per-pixel intensity difference of two windows (intensities in [0, 1]; the same kernel for every "
        "dataset and radius, so eps is comparable across datasets), e.g. 0.1 (default: median)",
    )
    m.add_argument("--permutations", type=int, help=f"randomisation-null draws {_default('permutations')}")
    m.add_argument("--bootstrap", type=int, help=f"bootstrap draws over images {_default('bootstrap')}")
    m.add_argument("--interpolation", choices=list(defaults.INTERPOLATIONS), help=f"{_default('interpolation')}")
    m.add_argument(
        "--frechet",
        action="store_true",
        default=None,
        help="also report W2^2 in squared image-norm units, bracketed: Gelbrich (Frechet) lower bound and "
        "per-image optimal-assignment upper bound",
    )
    m.add_argument(
        "--contrast",
        action="store_true",
        default=None,
        help="add a local-contrast channel (log |Laplacian|, exactly D4-equivariant) to every window, so the test "
        "sees where texture is; the null stays exact (default: off; on with --preset photos)",
    )
    m.add_argument("--alpha", type=float, help=f"verdicts level, Holm over groups {_default('alpha')}")
    m.add_argument("--seed", type=int, help=f"seed for windows, features, null and bootstrap {_default('seed')}")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    m.add_argument(
        "--max-memory",
        metavar="SIZE",
        help="refuse to start when the run's estimated memory exceeds SIZE, e.g. 16G or 512M (default: what the "
        "machine has available: MemAvailable, a cgroup limit or ulimit -v, whichever is least; a GPU's share is "
        "compared with its free memory)",
    )
    m.add_argument("--threads", type=int, help="CPU threads of this process (default: $OMP_NUM_THREADS, else 1)")
    o = p.add_argument_group("output")
    o.add_argument("--json", default=None, metavar="PATH", help="write the full report as JSON")
    o.add_argument("--csv", default=None, metavar="PATH", help="write the tidy table as CSV")
    o.add_argument(
        "--plot", default=None, metavar="FILE.png", help="plot eps and its null band against radius and mesh"
    )
    o.add_argument("--checkpoint", default=None, metavar="PATH", help="save running sums here; rerun to resume")
    o.add_argument("--quiet", action="store_true", help="no progress bar or table")
    o.add_argument("--list-datasets", action="store_true", help="list the datasets and exit")
    o.add_argument("--list-groups", action="store_true", help="list the groups and exit")
    return p


SPLIT_DATASETS = ("rain100l", "div2k")
"""Datasets with train/valid/test splits: the split used is named when it was left to its default."""


def default_split(dataset: str, split: str | None, quiet: bool = False) -> str:
    """``split``, else ``"train"``; for a dataset with splits, a note on stderr says the default was taken."""
    if split is not None:
        return split
    if not quiet and str(dataset).split(":")[0].lower() in SPLIT_DATASETS:
        print(f"note: {dataset}: using the train split (the default; --split test for the test split)", file=sys.stderr)
    return "train"


SETTINGS = tuple(_DEFAULT)  # option names passed to the API as Settings fields


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_datasets:
        for key, text in list_datasets().items():
            print(f"{key:<24} {text}")
        return 0
    if args.list_groups:
        print(f"groups: {GROUP_NAMES_HELP}")
        for key in EXAMPLE_GROUPS:
            print(f"  {key:<8} {', '.join(get_group(key).names)}")
        return 0
    set_threads(args.threads)
    info = setup_distributed(resolve_device(args.device))
    try:
        return _run(args, info)
    except SymmetryError as err:
        if not info.main:
            return err.exit_code  # every rank raises the same error; rank 0 alone reports it
        raise
    finally:
        if info.owns_group:
            torch.distributed.destroy_process_group()


def _distinct_outputs(args: argparse.Namespace) -> None:
    """Refuse one path named for two outputs (one would overwrite the other)."""
    seen: dict[str, str] = {}
    for option in ("json", "csv", "checkpoint", "plot"):
        value = getattr(args, option)
        if value:
            key = os.path.realpath(os.path.expanduser(value))
            if key in seen:
                raise UsageError(
                    f"--{seen[key]} and --{option} name the same file {value}; give each output its own path"
                )
            seen[key] = option


def _run(args: argparse.Namespace, info: DistInfo) -> int:

    verdict = None  # rank 0 checks the output paths (its file system), the others follow
    if info.main:
        try:
            _distinct_outputs(args)
            outputs = {f"--{o}": getattr(args, o) for o in ("json", "csv", "plot", "checkpoint")}
            check_outputs_apart_from_inputs(outputs, args.dataset, IMAGE_EXTENSIONS)
            if args.plot:
                check_plot_format(args.plot)
            for option in ("json", "csv", "plot"):
                if getattr(args, option):
                    check_writable(getattr(args, option), f"--{option}")
            budget.check_measure(args, processes=budget.local_processes())  # before any work: issue 23
        except UsageError as err:
            verdict = err
    verdict = broadcast_object(verdict, info)
    if verdict is not None:
        raise verdict
    split = default_split(args.dataset, args.split, quiet=args.quiet or not info.main)
    report = measure_dataset(
        args.dataset,
        args.group,
        args.mesh,
        preset=args.preset,
        data_root=args.data_root,
        download=args.download,
        split=split,
        channels=args.channels,
        augment=args.augment,
        max_images=args.max_images,
        skip_bad=args.skip_bad,
        device=args.device,
        checkpoint=args.checkpoint,
        progress=not args.quiet and sys.stderr.isatty(),
        **{name: getattr(args, name) for name in SETTINGS if name != "exact"},
    )
    if not info.main:
        return 0
    if not args.quiet:
        report.render()
    if args.json:
        report.to_json(args.json)
    if args.csv:
        report.to_csv(args.csv)
    if args.plot:
        report.plot(args.plot)
    return 0
