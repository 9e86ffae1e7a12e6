"""Measure a dataset's non-strict symmetry error eps_G(h) (theory.md, section 4).

Command line (``python -m symmetry.measure --help``)::

    python -m symmetry.measure                                   # scikit-image's bundled photos, rot8
    python -m symmetry.measure --dataset folder:PATH --group dih4 --mesh 2,1,0.5 --json out.json

Python::

    import symmetry
    report = symmetry.measure("synthetic:kfold,k=4", "rot8", mesh=(2, 1, 0.5))
    report.to_frame()

Several processes (``torchrun --nproc_per_node=K -m symmetry.measure ...``, or ``measure``
called inside an initialised ``torch.distributed`` process group): image ``i`` is measured
by rank ``i % K``, the sufficient statistics are summed across the ranks (all-reduce) and
the per-image values gathered, so every rank returns the report a single process would
(same seed; equal up to floating-point summation order). Rank 0 prints and writes the
files. ``--checkpoint FILE`` then keeps one file per rank, ``FILE.rank{r}-of-{K}``, and a
resumed run needs the same ``K``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from symmetry import checkpoint as ckpt
from symmetry.errors import DataError, SymmetryError, UsageError
from symmetry.estimators import (
    MMDStatistics,
    MomentStatistics,
    RandomFourierFeatures,
    Settings,
    _rng,
    fit_mesh,
    image_windows,
    median_bandwidth,
    p_value,
)
from symmetry.groups import GROUP_NAMES_HELP, Group, UnknownGroupError, get_group
from symmetry.io import check_writable
from symmetry.report import SymmetryReport
from symmetry.runtime import (
    DistInfo,
    broadcast_object,
    cli_entry,
    gather_objects,
    rank_device,
    resolve_device,
    setup_distributed,
)
from symmetry.transforms import INTERPOLATIONS, disk_offsets

DEFAULT_DATASET = "skimage"
DEFAULT_GROUP = "rot8"
DEFAULT_MESH = (2.0, 1.0, 0.5)
CHECKPOINT_EVERY = 8  # images between checkpoint writes


def _resolve_group(group: str | Group) -> Group:
    if isinstance(group, Group):
        return group
    try:
        return get_group(group)
    except UnknownGroupError as err:
        raise UsageError(str(err)) from None


def _resolve_dataset(dataset, data_root, download, split, channels, augment_group, max_images):
    ds = dataset
    if isinstance(dataset, str):
        from symmetry.data import load_dataset

        ds = load_dataset(dataset, data_root=data_root, download=download, split=split, channels=channels)
    if augment_group:
        from symmetry.data import augment

        ds = augment(ds, augment_group)
    sources = list(ds)
    if max_images is not None:
        sources = sources[:max_images]
    if not sources:
        raise DataError(f"dataset {getattr(ds, 'name', dataset)} has no images")
    return getattr(ds, "name", "images"), sources


def _check_settings(meshes, settings: Settings) -> None:
    if not meshes:
        raise UsageError("give at least one mesh size, e.g. --mesh 1")
    bad = [h for h in meshes if not h > 0]
    if bad:
        raise UsageError(f"mesh sizes must be > 0, got {', '.join(f'{h:g}' for h in bad)}")
    if not settings.radius > 0:
        raise UsageError(f"window radius must be > 0, got {settings.radius:g}")
    if settings.windows < 1 or settings.features < 1:
        raise UsageError("--windows and --features must be at least 1")
    if settings.permutations < 0 or settings.bootstrap < 0:
        raise UsageError("--permutations and --bootstrap must be >= 0")
    if settings.bandwidth is not None and not settings.bandwidth > 0:
        raise UsageError(f"--bandwidth must be > 0, got {settings.bandwidth:g}")
    if settings.interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {settings.interpolation!r}; choose {', '.join(INTERPOLATIONS)}")


class _Progress:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(description, total=total)

    def advance(self, n: int = 1) -> None:
        if self.bar:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar:
            self.bar.stop()


def measure(
    dataset="skimage",
    group: str | Group = DEFAULT_GROUP,
    mesh=DEFAULT_MESH,
    *,
    data_root=None,
    download: bool = False,
    split: str = "train",
    channels: str = "gray",
    augment: str | None = None,
    max_images: int | None = None,
    skip_bad: bool = False,
    radius: float = 8.0,
    windows: int = 128,
    features: int = 512,
    bandwidth: float | None = None,
    permutations: int = 200,
    bootstrap: int = 200,
    seed: int = 0,
    interpolation: str = "bicubic",
    frechet: bool = False,
    exact: bool = False,
    alpha: float = 0.05,
    device="auto",
    dtype: torch.dtype = torch.float32,
    checkpoint=None,
    progress: bool = False,
) -> SymmetryReport:
    """Estimate ``eps_G(h) = max_A d(P_h, pi~_A P_h)`` for every mesh ``h`` (theory.md, section 4).

    ``dataset`` is a spec (``skimage``, ``folder:PATH``, ``div2k``, ``rain100l``,
    ``synthetic:...``; see ``symmetry.data.list_datasets``) or a sequence of image
    sources. ``checkpoint`` names a file where the running sums are saved every few
    images; rerunning with the same arguments resumes from it.

    Under ``torchrun`` (``WORLD_SIZE > 1``) or inside an initialised process group the
    images are shared out across the ranks (image ``i`` to rank ``i % K``) and every rank
    returns the whole report; with a ``checkpoint`` each rank keeps its own file
    ``checkpoint.rank{r}-of-{K}``.
    """
    meshes = [float(h) for h in (mesh if isinstance(mesh, (list, tuple)) else [mesh])]
    settings = Settings(
        radius, windows, features, bandwidth, permutations, bootstrap, seed, interpolation, frechet, exact
    )
    _check_settings(meshes, settings)
    grp = _resolve_group(group)
    dev = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
    info = setup_distributed(dev)
    try:
        if checkpoint is not None and info.world > 1:
            checkpoint = Path(f"{checkpoint}.rank{info.rank}-of-{info.world}")  # one file per rank
        if checkpoint is not None:
            check_writable(checkpoint, "checkpoint")
        name, sources = _resolve_dataset(dataset, data_root, download, split, channels, augment, max_images)
        data = dict(dataset=name, split=split, channels=channels, augment=augment, max_images=max_images)
        report = _measure(
            name,
            sources,
            grp,
            meshes,
            settings,
            rank_device(dev, info),
            info,
            dtype,
            checkpoint,
            skip_bad,
            progress,
            data,
        )
        report.alpha = alpha
        report.meta["channels"] = channels
        return report
    finally:
        if info.owns_group:
            torch.distributed.destroy_process_group()


def _measure(
    name: str,
    sources: list,
    grp: Group,
    meshes: list[float],
    settings: Settings,
    dev: torch.device,
    info: DistInfo,
    dtype: torch.dtype,
    checkpoint: str | Path | None,
    skip_bad: bool,
    progress: bool = False,
    data: dict | None = None,
) -> SymmetryReport:
    """:func:`measure` once the arguments are checked: this rank's share of the images, then the totals."""
    radius, features, bandwidth = settings.radius, settings.features, settings.bandwidth
    permutations, bootstrap, seed, frechet = settings.permutations, settings.bootstrap, settings.seed, settings.frechet
    shard = (info.rank, info.world) if info.world > 1 else None
    started = time.perf_counter()

    skipped: list[str] = []
    if bandwidth is None:
        good = _pilot_sources(sources, settings, skip_bad)
        bandwidth = broadcast_object(median_bandwidth(good, settings, dev), info)  # every rank: one kernel
    fp = ckpt.fingerprint(
        dict(
            data=data or {"dataset": name},
            images=[str(s.name) for s in sources],
            group=grp.name,
            meshes=meshes,
            settings=settings.__dict__,
            bandwidth=bandwidth,
            dtype=str(dtype),
            shard=shard,
            skip_bad=skip_bad,
        )
    )
    matrices = grp.matrices()

    mmd = [MMDStatistics(len(grp), features, permutations, bootstrap, seed) for _ in meshes]
    moments: list[MomentStatistics | None] = [None] * len(meshes)
    rff: RandomFourierFeatures | None = None  # one kernel for every mesh
    weights: list[torch.Tensor | None] = [None] * len(meshes)
    mine = range(info.rank, len(sources), info.world)  # this rank's images (all of them in one process)
    start, records = 0, []
    if checkpoint is not None and Path(checkpoint).exists():
        state = ckpt.load(checkpoint)
        if ckpt.matches(state, fp, sources, mine):
            _restore(checkpoint, state, mmd, moments, len(grp), features, permutations, bootstrap, seed)
            start, skipped, records = state["done"], list(state["skipped"]), list(state["images"])
        elif not state["finished"]:
            raise ckpt.refuse(checkpoint)  # a finished run's checkpoint is simply recomputed

    bar = _Progress(progress and info.main, len(mine), f"{name} {grp.name}")
    bar.advance(start)
    failure: SymmetryError | None = None
    try:
        for done, index in enumerate(mine[start:], start=start + 1):
            src = sources[index]
            try:
                per_mesh = image_windows(src, index, meshes, matrices, settings, dev, dtype)
            except DataError as err:
                if not skip_bad:
                    raise DataError(f"{err} (use --skip-bad to skip such images)") from None
                skipped.append(f"{src.name}: {err}")
                bar.advance()
                _maybe_save(checkpoint, fp, done, len(mine), skipped, records, mmd, moments)
                continue
            if checkpoint is not None:
                records.append(ckpt.image_record(src))
            for mi, (h, win) in enumerate(zip(meshes, per_mesh)):
                if rff is None:
                    channels_ = win.shape[-1] // len(disk_offsets(radius, h))
                    rff = RandomFourierFeatures(features, channels_, bandwidth, int(_rng(seed, 11).integers(2**62)))
                if weights[mi] is None:
                    weights[mi] = rff.weights(h * disk_offsets(radius, h), h).to(dev, dtype)
                z = rff(win, weights[mi])  # (G, M, D)
                d = (z - z[:1]).sum(1)
                mmd[mi].add(index, d, win.shape[1])
                if frechet:
                    if moments[mi] is None:
                        moments[mi] = MomentStatistics(len(grp), win.shape[-1])
                    moments[mi].add(win)
            bar.advance()
            _maybe_save(checkpoint, fp, done, len(mine), skipped, records, mmd, moments)
    except SymmetryError as err:
        if info.world <= 1:
            raise
        failure = err  # raised on every rank below, so that no rank waits for the others forever
    finally:
        bar.close()
    if info.world > 1:
        failures = [f for f in gather_objects(failure, info) if f is not None]
        if failures:
            raise failures[0]
        skipped = _combine_shards(info, sources, mmd, moments, skipped)

    report = _assemble(name, grp, meshes, sources, mmd, moments, settings)
    report.meta.update(
        images=mmd[0].images,
        skipped=len(skipped),
        skipped_images=skipped,
        bandwidth=bandwidth,
        device=str(dev),
        seconds=round(time.perf_counter() - started, 3),
    )
    if info.world > 1:
        report.meta["processes"] = info.world
    return report


def _combine_shards(info: DistInfo, sources, mmd, moments, skipped: list[str]) -> list[str]:
    """Sum every rank's statistics in place (all ranks end with the totals); returns all skipped images, in order."""
    for stats in mmd:
        stats.all_reduce(info)
    dims = gather_objects([m.dim if m is not None else None for m in moments], info)
    for mi in range(len(moments)):
        dim = next((d[mi] for d in dims if d[mi] is not None), None)
        if dim is not None:
            if moments[mi] is None:  # this rank had no readable image
                moments[mi] = MomentStatistics(mmd[mi].order, dim)
            moments[mi].all_reduce(info)
    order = {}
    for i, src in enumerate(sources):
        order.setdefault(src.name, i)
    everything = [s for shard in gather_objects(skipped, info) for s in shard]
    return sorted(everything, key=lambda s: order.get(s.split(": ", 1)[0], len(sources)))


def _pilot_sources(sources, settings, skip_bad, count: int = 8):
    """The first readable sources for the bandwidth rule (bad ones skipped only with skip_bad)."""
    good = []
    for src in sources:
        try:
            pilot = Settings(**{**settings.__dict__, "windows": 1, "exact": False})
            image_windows(src, 0, [1.0], torch.eye(2, dtype=torch.float64)[None], pilot)
        except DataError as err:
            if not skip_bad:
                raise DataError(f"{err} (use --skip-bad to skip such images)") from None
            continue
        good.append(src)
        if len(good) == count:
            break
    if not good:
        raise DataError("no readable image large enough for the windows")
    return good


def _maybe_save(path, fp, done, total, skipped, records, mmd, moments) -> None:
    """Save the running sums every few images and at the end (then marked finished)."""
    if path is None or not (done % CHECKPOINT_EVERY == 0 or done == total):
        return
    state = {
        "fingerprint": fp,
        "finished": done == total,
        "done": done,
        "skipped": list(skipped),
        "images": list(records),
        "mmd": [s.state_dict() for s in mmd],
        "moments": [m.state_dict() if m is not None else None for m in moments],
    }
    ckpt.save(path, state)


def _restore(path, state, mmd, moments, order, features, permutations, bootstrap, seed) -> None:
    """Load validated statistics from a checkpoint of this run into ``mmd`` and ``moments`` (in place)."""
    if len(state["mmd"]) != len(mmd) or len(state["moments"]) != len(moments):
        raise DataError(f"checkpoint {path}: wrong number of meshes; delete it to start over")
    for i, s in enumerate(state["mmd"]):
        ckpt.check_state(path, MMDStatistics(order, features, permutations, bootstrap, seed).state_dict(), s, "MMD")
        if (s["order"], s["features"], s["permutations"], s["bootstrap"], s["seed"]) != (
            order,
            features,
            permutations,
            bootstrap,
            seed,
        ):
            raise DataError(f"checkpoint {path}: MMD settings differ from this run; delete it to start over")
        mmd[i] = MMDStatistics.from_state(s)
    for i, m in enumerate(state["moments"]):
        if m is None:
            moments[i] = None
            continue
        dim = m.get("dim") if isinstance(m, dict) else None
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim < 10**7:
            raise DataError(f"checkpoint {path}: malformed moment statistics; delete it to start over")
        ckpt.check_state(path, MomentStatistics(order, dim).state_dict(), m, "moment")
        moments[i] = MomentStatistics(**m)


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else float("nan")


def _assemble(name, grp, meshes, sources, mmd, moments, settings, alpha: float = 0.05) -> SymmetryReport:
    rows, per_image, boots = [], [], {"worst": [], "mean": []}
    names = grp.names
    for h, stats, mom in zip(meshes, mmd, moments):
        est = {k: v.numpy() for k, v in stats.estimate().items()}
        eps, null, boot = est["eps"][1:], est["null"][:, 1:], est["boot"][:, 1:]
        frechet = mom.distances().numpy()[1:] if mom is not None else None
        if len(eps) == 0:  # the trivial group: nothing to compare
            eps, null, boot = np.zeros(1), np.zeros((null.shape[0], 1)), np.zeros((boot.shape[0], 1))
        for j, el in enumerate(names[1:]):
            rows.append(
                _row(
                    h, el, grp[j + 1].angle, eps[j], null[:, j], boot[:, j], frechet[j] if frechet is not None else None
                )
            )
        summaries = {"worst": (eps.max(), null.max(1), boot.max(1)), "mean": (eps.mean(), null.mean(1), boot.mean(1))}
        for stat, (obs, nul, bts) in summaries.items():
            fr = (
                None
                if frechet is None
                else (frechet.max() if stat == "worst" else frechet.mean())
                if len(frechet)
                else 0.0
            )
            rows.append(_row(h, stat, float("nan"), obs, nul, bts, fr))
            boots[stat].append(bts)
        for index, values in stats.per_image:
            for el, v in zip(names[1:], values[1:]):
                per_image.append({"mesh": h, "image": sources[index].name, "element": el, "self_symmetry_error": v})
    fits = []
    if len(set(meshes)) >= 2:
        for stat in ("worst", "mean"):
            obs = [r["symmetry_error"] for r in rows if r["statistic"] == stat]
            eps0, c = fit_mesh(meshes, obs)
            lo = hi = float("nan")
            if settings.bootstrap:
                b_eps0, _ = fit_mesh(meshes, np.stack(boots[stat]))
                lo, hi = _quantile(b_eps0, 0.025), _quantile(b_eps0, 0.975)
            fits.append({"statistic": stat, "eps0": float(eps0), "c": float(c), "eps0_ci_low": lo, "eps0_ci_high": hi})
    return SymmetryReport(
        dataset=name,
        group=grp.name,
        elements=names,
        meshes=meshes,
        rows=rows,
        fits=fits,
        per_image=per_image,
        settings=dict(settings.__dict__),
        meta={},
        alpha=alpha,
    )


def _row(mesh, statistic, angle, obs, null, boot, frechet) -> dict:
    row = {
        "mesh": mesh,
        "statistic": statistic,
        "angle": angle,
        "symmetry_error": float(obs),
        "null_q95": _quantile(null, 0.95),
        "p_value": p_value(obs, null) if len(null) else float("nan"),
        "ci_low": _quantile(boot, 0.025),
        "ci_high": _quantile(boot, 0.975),
    }
    if frechet is not None:
        row["frechet_distance"] = float(frechet)
    return row


# ---- command line -------------------------------------------------------------------------


def _meshes(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mesh takes comma-separated numbers like 2,1,0.5, got {text!r}") from None
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m symmetry.measure",
        description="Estimate a dataset's non-strict symmetry error eps_G(h) per group element and mesh size "
        "(squared kernel MMD between windows and transformed windows, with a permutation null, a bootstrap "
        "interval and the eps0 + c*h^2 extrapolation).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = p.add_argument_group("data")
    d.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help="skimage, folder:PATH, div2k, rain100l or synthetic:FAMILY[,k=v]; see --list-datasets",
    )
    d.add_argument(
        "--data-root", default=None, help="where datasets live (default: $SYMMETRY_DATA or ~/.cache/symmetry)"
    )
    d.add_argument("--download", action="store_true", help="download the dataset if missing (div2k)")
    d.add_argument("--split", default="train", help="dataset split: train, valid or test")
    d.add_argument("--channels", default="gray", choices=["gray", "rgb"], help="luma (BT.601) or RGB windows")
    d.add_argument(
        "--augment", default=None, metavar="GROUP", help="close the dataset under a grid-exact group first (e.g. dih4)"
    )
    d.add_argument("--max-images", type=int, default=None, help="use only the first N images")
    d.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable or too-small images and count them, instead of failing"
    )
    m = p.add_argument_group("measurement")
    m.add_argument(
        "--group", default=DEFAULT_GROUP, help=f"transformation group: {GROUP_NAMES_HELP}; see --list-groups"
    )
    m.add_argument(
        "--mesh", type=_meshes, default=list(DEFAULT_MESH), help="mesh sizes h in native pixels, comma-separated"
    )
    m.add_argument("--radius", type=float, default=8.0, help="window radius in native pixels (fixed across meshes)")
    m.add_argument("--windows", type=int, default=128, help="windows per image and mesh")
    m.add_argument("--features", type=int, default=512, help="random Fourier features")
    m.add_argument(
        "--bandwidth", type=float, default=None, help="Gaussian kernel sigma (default: median rule on the first images)"
    )
    m.add_argument("--permutations", type=int, default=200, help="permutation-null draws")
    m.add_argument("--bootstrap", type=int, default=200, help="bootstrap draws over images")
    m.add_argument(
        "--interpolation", default="bicubic", choices=list(INTERPOLATIONS), help="interpolation of transformed windows"
    )
    m.add_argument("--frechet", action="store_true", help="also report the Gaussian (Frechet) distance")
    m.add_argument("--alpha", type=float, default=0.05, help="level at which 'symmetric' is decided")
    m.add_argument("--seed", type=int, default=0, help="seed for windows, features, null and bootstrap")
    m.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    o = p.add_argument_group("output")
    o.add_argument("--json", default=None, metavar="PATH", help="write the full report as JSON")
    o.add_argument("--csv", default=None, metavar="PATH", help="write the tidy table as CSV")
    o.add_argument("--checkpoint", default=None, metavar="PATH", help="save running sums here; rerun to resume")
    o.add_argument("--quiet", action="store_true", help="no progress bar or table")
    o.add_argument("--list-datasets", action="store_true", help="list the datasets and exit")
    o.add_argument("--list-groups", action="store_true", help="list the groups and exit")
    return p


@cli_entry
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_datasets:
        from symmetry.data import list_datasets

        for key, text in list_datasets().items():
            print(f"{key:<24} {text}")
        return 0
    if args.list_groups:
        from symmetry.groups import EXAMPLE_GROUPS

        print(f"groups: {GROUP_NAMES_HELP}")
        for key in EXAMPLE_GROUPS:
            print(f"  {key:<8} {', '.join(get_group(key).names)}")
        return 0
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
    for option in ("json", "csv", "checkpoint"):
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
            for option in ("json", "csv"):
                if getattr(args, option):
                    check_writable(getattr(args, option), f"--{option}")
        except UsageError as err:
            verdict = err
    verdict = broadcast_object(verdict, info)
    if verdict is not None:
        raise verdict
    report = measure(
        args.dataset,
        args.group,
        args.mesh,
        data_root=args.data_root,
        download=args.download,
        split=args.split,
        channels=args.channels,
        augment=args.augment,
        max_images=args.max_images,
        skip_bad=args.skip_bad,
        radius=args.radius,
        windows=args.windows,
        features=args.features,
        bandwidth=args.bandwidth,
        permutations=args.permutations,
        bootstrap=args.bootstrap,
        seed=args.seed,
        interpolation=args.interpolation,
        frechet=args.frechet,
        alpha=args.alpha,
        device=args.device,
        checkpoint=args.checkpoint,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    if not info.main:
        return 0
    if not args.quiet:
        report.render()
    if args.json:
        report.to_json(args.json)
    if args.csv:
        report.to_csv(args.csv)
    return 0


class _CallableModule(types.ModuleType):
    """Lets ``symmetry.measure(...)`` call :func:`measure` although ``symmetry.measure`` is also this module."""

    def __call__(self, *args, **kwargs) -> SymmetryReport:
        return measure(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
