"""Measure a dataset's non-strict symmetry error eps_G(h) (theory.md, section 4): the Python API.

    import symmetry
    report = symmetry.measure_dataset("synthetic:kfold,k=4", "rot4,rot8", mesh=(2, 1, 0.5))
    report.to_frame()

Several groups are measured in one pass: the windows and features of the union of their
elements are computed once per image (:mod:`symmetry.features`) and each group keeps its
own sums (:mod:`symmetry.estimators`); the report (:mod:`symmetry.report`) adjusts the
p-values of every element and mesh of a group under one threshold (min-p), Holm over the groups.

Several processes (``torchrun --nproc_per_node=K -m symmetry.measure ...``, or the API
called inside an initialised ``torch.distributed`` process group): image ``i`` is measured
by rank ``i % K``, the sufficient statistics are summed across the ranks (all-reduce) and
the per-image values gathered, so every rank returns the report a single process would
(same seed; equal up to floating-point summation order). ``checkpoint`` then keeps one
file per rank, ``FILE.rank{r}-of-{K}``, and a resumed run needs the same ``K``.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from symmetry import checkpoint as ckpt
from symmetry import runtime
from symmetry import settings as defaults
from symmetry.contrast import ContrastSource
from symmetry.datasets import load_dataset
from symmetry.errors import DataError, SymmetryError, UsageError
from symmetry.estimators import MMDStatistics, MomentStatistics
from symmetry.features import RandomFourierFeatures, feature_differences, image_windows, median_bandwidth
from symmetry.groups import Group, GroupElement, get_group
from symmetry.io import check_writable
from symmetry.report import SymmetryReport, assemble, combine, combine_kernels
from symmetry.runtime import (
    DistInfo,
    broadcast_object,
    gather_objects,
    rank_device,
    resolve_device,
    setup_distributed,
)
from symmetry.settings import Settings, check_meshes, window_scale
from symmetry.sources import ImageSource, augment, first_images
from symmetry.transforms import disk_offsets

CHECKPOINT_EVERY = 8  # images between checkpoint writes


def parse_groups(group) -> list[Group]:
    """Groups from a name, a comma-separated list of names (``rot4,flip,flipud,dih4``), a Group or a list."""
    items = group.split(",") if isinstance(group, str) else list(group) if isinstance(group, (list, tuple)) else [group]
    groups = [
        g if isinstance(g, Group) else get_group(str(g)) for g in items if not (isinstance(g, str) and not g.strip())
    ]
    if not groups:
        raise UsageError("give at least one group, e.g. --group rot4 or --group rot4,flip")
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise UsageError(f"groups repeat: {', '.join(names)}")
    return groups


def _union(groups: list[Group]) -> tuple[list[GroupElement], list[list[int]]]:
    """The distinct elements of all groups (identity first) and each group's element indices into them."""
    union: list[GroupElement] = []
    indices = []
    for grp in groups:
        idx = []
        for e in grp:
            hit = next((i for i, u in enumerate(union) if u.close_to(e.matrix)), None)
            if hit is None:
                union.append(e)
                hit = len(union) - 1
            idx.append(hit)
        indices.append(idx)
    return union, indices


def _resolve_dataset(dataset, data_root, download, split, channels, augment_group, max_images):
    ds = dataset
    if isinstance(dataset, str):
        ds = load_dataset(dataset, data_root=data_root, download=download, split=split, channels=channels)
    if augment_group:
        ds = augment(ds, augment_group)
    sources = first_images(list(ds), max_images)
    if not sources:
        raise DataError(f"dataset {getattr(ds, 'name', dataset)} has no images")
    return getattr(ds, "name", "images"), sources


def measure_dataset(
    dataset=defaults.DATASET,
    group=",".join(defaults.GROUPS),
    mesh=None,
    *,
    preset: str | None = None,
    data_root=None,
    download: bool = False,
    split: str = "train",
    channels: str = "gray",
    augment: str | None = None,
    max_images: int | None = None,
    skip_bad: bool = False,
    device="auto",
    dtype: torch.dtype | None = None,
    checkpoint=None,
    progress: bool = False,
    **options,
) -> SymmetryReport:
    """Estimate ``eps_G(h) = max_A d(P_h, pi~_A P_h)`` for every group and mesh ``h`` (theory.md, section 4).

    ``dataset`` is a spec (``skimage``, ``folder:PATH``, ``div2k``, ``rain100l``, ``synthetic:...``;
    see ``symmetry.datasets.list_datasets``) or a sequence of image sources. ``group`` is a name, a
    comma-separated list of names or a list of groups. ``options`` are :class:`~symmetry.settings.Settings`
    fields by name (``radius``, ``windows``, ``features``, ``bandwidth``, ``permutations``, ``bootstrap``,
    ``seed``, ``interpolation``, ``frechet``, ``exact``, ``alpha``, ``contrast``); omitted ones take its defaults,
    or those of ``preset`` (a name in :data:`symmetry.settings.PRESETS`, e.g. ``"photos"``, which also sets
    ``mesh`` when ``mesh`` is None). ``mesh`` defaults to :data:`symmetry.settings.MESHES`.
    ``checkpoint`` names a file where the running sums are saved every few images; rerunning with the
    same arguments resumes from it. ``dtype`` of the windows and features: float64 on a CPU (the squared MMD
    cancels about four digits, so float32 features carry ~1e-5 relative error at h = 0.5), float32 on a GPU
    (where float64 is slow on most cards) unless given.
    """
    chosen = defaults.preset_options(preset)
    options = {k: v for k, v in options.items() if v is not None}
    if options.get("kernels", chosen.get("kernels")) is None:  # options describing one kernel select one kernel
        single = any(k in options for k in defaults.SINGLE_KERNEL_OPTIONS)
        options["kernels"] = "single" if single else "aggregate"
    run = dict(  # how the images are found, read and processed: the same for every path below
        data_root=data_root,
        download=download,
        split=split,
        channels=channels,
        augment=augment,
        max_images=max_images,
        skip_bad=skip_bad,
        device=device,
        dtype=dtype,
        checkpoint=checkpoint,
        progress=progress,
    )
    if {**chosen, **options}["kernels"] == "aggregate":
        if preset is not None:
            raise UsageError(f"--preset {preset} is one kernel; it cannot be combined with --kernels aggregate")
        return _aggregate(dataset, group, mesh, **run, **options)
    if mesh is None:
        mesh = chosen.pop("mesh", defaults.MESHES)
    chosen.pop("mesh", None)
    options = {**chosen, **options}
    radii = _radii(options.pop("radius", None))
    if len(radii) > 1:
        profile = _scale_profile(radii, dataset, group, mesh, **run, **options)
        if preset is not None:
            profile.meta["preset"] = preset
        return profile
    settings = Settings.from_options(radius=radii[0], **options)
    meshes = check_meshes(mesh if isinstance(mesh, (list, tuple)) else [mesh], settings.radius)
    groups = parse_groups(group)
    dev = resolve_device(device) if isinstance(device, str) or device is None else torch.device(device)
    if dtype is None:
        dtype = torch.float64 if dev.type == "cpu" else torch.float32
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
            groups,
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
        report.meta["channels"] = channels
        if preset is not None:
            report.meta["preset"] = preset
        return report
    finally:
        if info.owns_group:
            torch.distributed.destroy_process_group()


def _aggregate(dataset, group, mesh, *, checkpoint=None, **kwargs) -> SymmetryReport:
    """The aggregated default test: one run per component of :data:`symmetry.settings.AGGREGATE` (its radius,
    kernel and channels; its mesh times each ``mesh`` value, default 1), combined by
    :func:`symmetry.report.combine_kernels` (the smallest of the components' p-values, calibrated by the same
    randomisation null draws: every component uses the same random group element per image and null draw)."""

    given = sorted(k for k in defaults.SINGLE_KERNEL_OPTIONS if k in kwargs)
    if given:
        raise UsageError(
            f"--{', --'.join(given)} describe(s) one kernel, but --kernels aggregate runs its own kernels and scales; "
            "drop them, or add --kernels single"
        )
    scales = [1.0] if mesh is None else [float(h) for h in (mesh if isinstance(mesh, (list, tuple)) else [mesh])]
    check_meshes(scales, 1.0)
    if isinstance(dataset, str) or kwargs.get("augment"):  # resolve (list, augment) once for every component
        name, sources = _resolve_dataset(
            dataset,
            kwargs.pop("data_root", None),
            kwargs.pop("download", False),
            kwargs.get("split", "train"),
            kwargs.get("channels", "gray"),
            kwargs.pop("augment", None),
            kwargs.pop("max_images", None),
        )
        dataset = _Named(name, sources)
    reports = []
    for comp in defaults.AGGREGATE:
        options = {k: v for k, v in comp.items() if k not in ("name", "mesh")}
        part = None if checkpoint is None else f"{checkpoint}.{comp['name']}"
        reports.append(
            measure_dataset(
                dataset,
                group,
                [comp["mesh"] * h for h in scales],
                checkpoint=part,
                **{**kwargs, **options, "kernels": "single"},
            )
        )
    return combine_kernels(reports, [c["name"] for c in defaults.AGGREGATE])


class _Named(list):
    """A list of image sources with the dataset's name (what :func:`_resolve_dataset` reads back)."""

    def __init__(self, name: str, sources: list):
        super().__init__(sources)
        self.name = name


def _radii(radius) -> list[float | None]:
    """``radius`` as a list: None (the default), a number, a list, or a comma-separated string."""
    if radius is None:
        return [None]
    if isinstance(radius, str):
        try:
            radius = [float(v) for v in radius.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--radius takes numbers like 8 or 4,8,16,32,64, got {radius!r}") from None
    values = list(radius) if isinstance(radius, (list, tuple)) else [radius]
    if not values:
        raise UsageError("give at least one window radius, e.g. --radius 8")
    if len(set(values)) != len(values):
        raise UsageError(f"window radii repeat: {values}")
    return values


def _scale_profile(radii, dataset, group, mesh, *, checkpoint=None, **kwargs) -> SymmetryReport:
    """One run per radius ``r`` at meshes ``h * r / PROFILE_RADIUS`` (windows keep their number of points); the
    reports are combined under one threshold per group (min-p over radii; theory.md: the support D is the receptive
    field, so symmetry is a function of scale)."""

    if checkpoint is not None:
        raise UsageError("--checkpoint is not supported with several --radius values; run one radius at a time")
    meshes = mesh if isinstance(mesh, (list, tuple)) else [mesh]
    reports = []
    for r in radii:
        scaled = [float(h) * float(r) / PROFILE_RADIUS for h in meshes]
        reports.append(measure_dataset(dataset, group, scaled, radius=r, **kwargs))
    return combine(reports, radii)


PROFILE_RADIUS = 8.0  # with several radii, --mesh is given for this radius and scales with the others


def _measure(
    name: str,
    sources: list,
    groups: list[Group],
    meshes: list[float],
    settings: Settings,
    dev: torch.device,
    info: DistInfo,
    dtype: torch.dtype,
    checkpoint: str | Path | None,
    skip_bad: bool,
    progress: bool,
    data: dict,
) -> SymmetryReport:
    """:func:`measure_dataset` once the arguments are checked: this rank's share of the images, then the totals."""
    shard = (info.rank, info.world) if info.world > 1 else None
    started = time.perf_counter()
    union, indices = _union(groups)
    matrices = torch.tensor([u.matrix for u in union], dtype=torch.float64)

    skipped: list[str] = []
    held: dict = {}  # index -> the pilot's decoded source
    if settings.bandwidth == "median":
        held = _pilot_sources(sources, settings, skip_bad)  # decoded once, reused by the pass over the images
        good = [_view(src, settings) for src in held.values()]
        bandwidth = broadcast_object(median_bandwidth(good, settings, dev), info)  # every rank: one kernel
    else:  # a fixed kernel in standardised units (Settings): the same for every dataset
        bandwidth = float(settings.bandwidth) * window_scale(settings.radius)
    fp = ckpt.fingerprint(
        dict(
            data=data,
            images=[str(s.name) for s in sources],
            groups=[g.name for g in groups],
            meshes=meshes,
            settings=settings.__dict__,
            bandwidth=bandwidth,
            dtype=str(dtype),
            shard=shard,
            skip_bad=skip_bad,
        )
    )
    s = settings
    mmd = [
        [MMDStatistics.for_group(g, s.features, s.permutations, s.bootstrap, s.seed) for _ in meshes] for g in groups
    ]
    moments: list[MomentStatistics | None] = [None] * len(meshes)  # over the union of the elements
    rff: RandomFourierFeatures | None = None  # one kernel for every mesh and group
    mine = range(info.rank, len(sources), info.world)  # this rank's images (all of them in one process)
    start, records = 0, []
    if checkpoint is not None and Path(checkpoint).exists():
        state = ckpt.load(checkpoint)
        if ckpt.matches(state, fp, sources, mine):
            _restore(checkpoint, state, mmd, moments, groups, len(union), settings)
            start, skipped, records = state["done"], list(state["skipped"]), list(state["images"])
        elif not state["finished"]:
            raise ckpt.refuse(checkpoint)  # a finished run's checkpoint is recomputed and overwritten

    remaining = set(mine[start:])
    held = {i: src for i, src in held.items() if i in remaining}  # the others are another rank's or already done
    failure: SymmetryError | None = None
    label = f"{name} {','.join(g.name for g in groups)}"
    with runtime.progress(len(mine), label, enabled=progress and info.main, completed=start, transient=True) as bar:
        try:
            for done, (index, pixels) in enumerate(_prefetched(sources, list(mine[start:]), held), start=start + 1):
                src = sources[index]
                try:
                    pixels = pixels.result() if isinstance(pixels, Future) else pixels
                    per_mesh = image_windows(_view(pixels, settings), index, meshes, matrices, settings, dev, dtype)
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
                        channels = win.reps.shape[-1] // _points(settings.radius, h)
                        rff = RandomFourierFeatures.for_run(settings.features, channels, bandwidth, settings.seed)
                    d = feature_differences(win, rff, rff.lattice_weights(settings.radius, h, dev, dtype))  # (U, D)
                    for gi, idx in enumerate(indices):
                        mmd[gi][mi].add(index, d[idx], win.count)
                    if settings.frechet:
                        if moments[mi] is None:
                            moments[mi] = MomentStatistics(len(union), win.reps.shape[-1])
                        moments[mi].add(win.full())
                bar.advance()
                _maybe_save(checkpoint, fp, done, len(mine), skipped, records, mmd, moments)
        except SymmetryError as err:
            if info.world <= 1:
                raise
            failure = err  # raised on every rank below, so that no rank waits for the others forever
    if info.world > 1:
        failures = [f for f in gather_objects(failure, info) if f is not None]
        if failures:
            raise failures[0]
        skipped = _combine_shards(info, sources, mmd, moments, skipped, len(union))

    report = assemble(name, groups, indices, union, meshes, sources, mmd, moments, settings)
    report.meta.update(
        images=mmd[0][0].images,
        skipped=len(skipped),
        skipped_images=skipped,
        bandwidth=bandwidth,  # sigma in L2 units of the window (intensity x native px)
        bandwidth_mode="median" if settings.bandwidth == "median" else "fixed",
        bandwidth_std=bandwidth / window_scale(settings.radius),  # sigma in standardised units (Settings)
        p_floor=1 / (settings.permutations + 1),
        device=str(dev),
        seconds=round(time.perf_counter() - started, 3),
    )
    if info.world > 1:
        report.meta["processes"] = info.world
    return report


def _view(source, settings: Settings):
    """The source as the windows see it: with the local-contrast channel when ``settings.contrast``."""
    return ContrastSource(source) if settings.contrast else source


def _points(radius: float, mesh: float) -> int:

    return len(disk_offsets(radius, mesh))


def _combine_shards(info: DistInfo, sources, mmd, moments, skipped: list[str], order: int) -> list[str]:
    """Sum every rank's statistics in place (all ranks end with the totals); returns all skipped images, in order."""
    for per_group in mmd:
        for stats in per_group:
            stats.all_reduce(info)
    dims = gather_objects([m.dim if m is not None else None for m in moments], info)
    for mi in range(len(moments)):
        dim = next((d[mi] for d in dims if d[mi] is not None), None)
        if dim is not None:
            if moments[mi] is None:  # this rank had no readable image
                moments[mi] = MomentStatistics(order, dim)
            moments[mi].all_reduce(info)
    rank = {}
    for i, src in enumerate(sources):
        rank.setdefault(src.name, i)
    everything = [s for shard in gather_objects(skipped, info) for s in shard]
    return sorted(everything, key=lambda s: rank.get(s.split(": ", 1)[0], len(sources)))


def _pilot_sources(sources, settings: Settings, skip_bad: bool, count: int = 8) -> dict[int, ImageSource]:
    """The first readable sources for the bandwidth rule by index (bad ones skipped only with skip_bad), each
    decoded once: the check, the bandwidth rule and the measurement's own pass read the same pixels."""
    good = {}
    pilot = settings.replace(windows=1, exact=False)
    for index, src in enumerate(sources):
        try:
            held = _decoded(src)
            image_windows(_view(held, pilot), 0, [1.0], torch.eye(2, dtype=torch.float64)[None], pilot)
        except DataError as err:
            if not skip_bad:
                raise DataError(f"{err} (use --skip-bad to skip such images)") from None
            continue
        good[index] = held
        if len(good) == count:
            break
    if not good:
        raise DataError("no readable image large enough for the windows")
    return good


def _prefetched(sources, order: list[int], held: dict):
    """``(index, pixels)`` in ``order``: the pilot's held image, or a Future of the decoded image (raising its
    DataError), each image decoded on a thread while the one before it is measured. The pool is shut down (after
    at most one decode) when the loop ends or stops."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:

        def fetch(k: int):
            if k >= len(order):
                return None
            if order[k] in held:
                return held.pop(order[k])
            source = sources[order[k]]
            return pool.submit(_decoded, source) if _plain_file(source) else source

        ahead = fetch(0)
        for k, index in enumerate(order):
            current, ahead = ahead, fetch(k + 1)
            yield index, current


def _plain_file(source) -> bool:
    """An image source whose pixels are decoded from a file (or made by ``load``) and resampled by ``to_mesh``."""
    return isinstance(source, ImageSource) and source.array is None and type(source).at_mesh is ImageSource.at_mesh


def _decoded(source):
    """A plain image source (:func:`_plain_file`) with its pixels decoded and held; any other source (pixels
    in memory, synthetic, generated, resampled its own way) as it is."""
    return ImageSource(source.name, array=source.load()) if _plain_file(source) else source


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
        "mmd": [[s.state_dict() for s in per_group] for per_group in mmd],
        "moments": [m.state_dict() if m is not None else None for m in moments],
    }
    ckpt.save(path, state)


def _restore(path, state, mmd, moments, groups: list[Group], order: int, s: Settings) -> None:
    """Load validated statistics from a checkpoint of this run into ``mmd`` and ``moments`` (in place)."""
    if len(state["mmd"]) != len(mmd) or len(state["moments"]) != len(moments):
        raise DataError(f"checkpoint {path}: wrong number of groups or meshes; delete it to start over")
    for gi, (grp, per_group) in enumerate(zip(groups, state["mmd"])):
        if not isinstance(per_group, list) or len(per_group) != len(mmd[gi]):
            raise DataError(f"checkpoint {path}: wrong number of meshes; delete it to start over")
        for mi, saved in enumerate(per_group):
            fresh = MMDStatistics.for_group(grp, s.features, s.permutations, s.bootstrap, s.seed)
            ckpt.check_state(path, fresh.state_dict(), saved, "MMD")
            same = all(
                saved[k] == getattr(fresh, k) for k in ("order", "features", "permutations", "bootstrap", "seed")
            )
            if not same or not torch.equal(saved["table"], fresh.table):
                raise DataError(f"checkpoint {path}: MMD settings differ from this run; delete it to start over")
            mmd[gi][mi] = MMDStatistics.from_state(saved)
    for i, m in enumerate(state["moments"]):
        if m is None:
            moments[i] = None
            continue
        dim = m.get("dim") if isinstance(m, dict) else None
        if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim < 10**7:
            raise DataError(f"checkpoint {path}: malformed moment statistics; delete it to start over")
        ckpt.check_state(path, MomentStatistics(order, dim).state_dict(), m, "moment")
        moments[i] = MomentStatistics(**m)
