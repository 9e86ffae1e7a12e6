"""``python -m symmetry.measure``: the command line of the symmetry measurement (its options; :mod:`symmetry.command`
runs them).

Defaults come from :class:`symmetry.settings.Settings` (and the module constants beside it); an option
left out is passed as ``None`` and the API fills it in, so no default is written twice. Bad options give
one ``error: ...`` line and exit code 2 (data problems: 1), without argparse's usage block.

This module imports no torch (nor anything that does): ``--help`` and bad options are answered in a fraction of a
second (issue 20); torch and the measurement are imported by :func:`main` once the options are parsed.
"""

from __future__ import annotations

import argparse
from dataclasses import fields

from symmetry import interrupt
from symmetry import settings as defaults
from symmetry.errors import UsageError, cli_entry
from symmetry.groups import GROUP_NAMES_HELP
from symmetry.locations import DATA_ROOT_HELP
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


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with interrupt.importing():  # a Ctrl-C while torch loads ends at once, as during start-up
        from symmetry.command import run  # lazy: torch and the measurement load after the options parse (fast --help)

    return run(args)
