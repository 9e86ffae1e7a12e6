"""Memory budgets: refuse a run that cannot fit, from its options, before any work starts.

A :class:`Budget` is a list of :class:`Term` s (what is held, its bytes, the options that lower it), estimated
from the options alone; :func:`check` compares it with the memory available and raises one
:class:`BudgetError` line naming the largest term and what to lower. The memory available is ``--max-memory``
when given, else what the machine can still give this process (:func:`available_memory`: ``MemAvailable``, a
cgroup limit and the address-space rlimit, whichever is smallest); terms on a GPU are compared with that GPU's
free memory. The estimate is of the memory the run adds to the process as it stands when the check runs
(modules imported), checked against measured peaks in docs/limits.md.

Estimators live beside what they estimate: :func:`measure_budget` here (``python -m symmetry.measure``), and
:func:`analysis.budget.train_budget` (``python -m analysis.train``).
"""

from __future__ import annotations

import math
import os
import re
import resource
from dataclasses import dataclass, field
from pathlib import Path

from symmetry import settings as defaults
from symmetry.datasets import load_dataset
from symmetry.errors import SymmetryError, UsageError
from symmetry.estimators import NULL_CHUNK, pending_images
from symmetry.features import orbit_matrices
from symmetry.groups import get_group
from symmetry.measurement import PROFILE_RADIUS, _radii, parse_groups
from symmetry.runtime import resolve_device
from symmetry.settings import Settings, check_meshes
from symmetry.transforms import SUPPORT_MARGIN, disk_offsets

FLOAT64 = 8

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


class BudgetError(UsageError):
    """The options ask for more memory than is available (exit code 2, like any bad option)."""


@dataclass(frozen=True)
class Term:
    """One part of a run's memory: ``what`` it is, its ``bytes``, the options that ``lower`` it, its ``pool``
    (``"host"`` for RAM, else a device such as ``"cuda:0"``)."""

    what: str
    bytes: float
    lower: str
    pool: str = "host"


@dataclass
class Budget:
    """The terms of one run (several terms may share a name: they are summed in the message)."""

    command: str
    terms: list[Term] = field(default_factory=list)

    def add(self, what: str, nbytes: float, lower: str, pool: str = "host") -> None:
        if nbytes > 0:
            self.terms.append(Term(what, float(nbytes), lower, pool))

    def total(self, pool: str | None = None) -> float:
        return sum(t.bytes for t in self.terms if pool is None or t.pool == pool)

    def pools(self) -> list[str]:
        return sorted({t.pool for t in self.terms})

    def largest(self, pool: str | None = None) -> Term:
        """The largest term (terms of the same name summed)."""
        merged: dict[str, Term] = {}
        for t in self.terms:
            if pool is None or t.pool == pool:
                old = merged.get(t.what)
                merged[t.what] = t if old is None else Term(t.what, old.bytes + t.bytes, t.lower, t.pool)
        return max(merged.values(), key=lambda t: t.bytes)

    def scaled(self, factor: float) -> Budget:
        """Every term times ``factor`` (several processes on one machine)."""
        return Budget(self.command, [Term(t.what, t.bytes * factor, t.lower, t.pool) for t in self.terms])


def format_bytes(n: float) -> str:
    """``1.5 GiB``-style text (binary units)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} PiB"  # pragma: no cover


def parse_memory(text: str | int | float, option: str = "--max-memory") -> int:
    """Bytes from ``16G``, ``512M``, ``2.5GiB``, ``1e9`` (binary units: K = 1024); a UsageError otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
        if not match:
            raise UsageError(f"{option} takes a size like 8G, 512M or 2.5GiB, got {text!r}")
        value, unit = float(match.group(1)), match.group(2).upper()
    size = value * _UNITS[unit]
    if not (math.isfinite(size) and size >= 1 << 20):
        raise UsageError(f"{option} must be at least 1M (a size like 8G or 512M), got {text!r}")
    return int(size)


# ---- what is available ------------------------------------------------------------------------------


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room(cgroup_root: Path, proc_cgroup: Path) -> int | None:
    """Room left under this process's cgroup memory limit (v2 ``memory.max``, v1 ``memory.limit_in_bytes``)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2
            candidates = [
                (cgroup_root / rel, "memory.max", "memory.current"),
                (cgroup_root, "memory.max", "memory.current"),
            ]
        elif "memory" in controllers.split(","):
            base = cgroup_root / "memory"
            candidates = [
                (base / rel, "memory.limit_in_bytes", "memory.usage_in_bytes"),
                (base, "memory.limit_in_bytes", "memory.usage_in_bytes"),
            ]
        else:
            continue
        for folder, limit_name, usage_name in candidates:
            limit = _read_int(folder / limit_name)  # "max" (no limit) reads as None
            if limit is not None and limit < 1 << 60:
                rooms.append(limit - (_read_int(folder / usage_name) or 0))
                break
    return min(rooms) if rooms else None


def _address_space_room(status: Path) -> int | None:
    """Room left under ``RLIMIT_AS`` (an address-space limit, e.g. ``ulimit -v``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmSize:"):
                return soft - int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return soft


def available_memory(
    meminfo: Path = Path("/proc/meminfo"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    status: Path = Path("/proc/self/status"),
) -> tuple[int | None, str]:
    """``(bytes, where from)``: the least of the machine's available memory, the room under a cgroup limit and
    the room under the address-space rlimit; ``(None, ...)`` when none of them can be read (then nothing is
    refused without ``--max-memory``)."""
    found = {
        "available RAM (MemAvailable)": _meminfo_available(meminfo),
        "the cgroup memory limit": _cgroup_room(cgroup_root, proc_cgroup),
        "the address-space limit (ulimit -v)": _address_space_room(status),
    }
    if found["available RAM (MemAvailable)"] is None:
        try:
            found["available RAM"] = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    known = {k: v for k, v in found.items() if v is not None}
    if not known:
        return None, "unknown"
    source = min(known, key=known.get)
    return max(0, known[source]), source


def device_memory(pool: str) -> tuple[int | None, str]:
    """Free memory of the GPU ``pool`` (``"cuda:N"``)."""
    import torch

    try:
        free, _ = torch.cuda.mem_get_info(torch.device(pool))
    except (RuntimeError, ValueError, AssertionError):
        return None, f"free memory of {pool} (unknown)"
    return int(free), f"free memory of {pool}"


def check(budget: Budget, max_memory: int | None = None) -> None:
    """Raise a one-line :class:`BudgetError` when a pool's terms exceed what is available.

    ``max_memory`` (bytes) replaces the host's available memory; GPU pools are compared with their free memory.
    """
    for pool in budget.pools():
        need = budget.total(pool)
        if pool == "host":
            limit, source = (max_memory, "--max-memory") if max_memory is not None else available_memory()
        else:
            limit, source = device_memory(pool)
        if limit is None or need <= limit:
            continue
        big = budget.largest(pool)
        where = "" if pool == "host" else f" on {pool}"
        raise BudgetError(
            f"{budget.command} would need about {format_bytes(need)}{where} but {format_bytes(limit)} is available "
            f"({source}); the largest part is {big.what}, {format_bytes(big.bytes)}: lower {big.lower}"
            + (" (or raise --max-memory)" if pool == "host" and max_memory is not None else "")
        )


def local_processes() -> int:
    """Processes of this run on this machine (``torchrun`` sets ``LOCAL_WORLD_SIZE``); 1 otherwise."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


# ---- python -m symmetry.measure -----------------------------------------------------------------------


PYTHON_FLOAT_ENTRY = 32  # a float in a Python list: the 8-byte pointer and the 24-byte float object
PER_IMAGE_ENTRY = 150  # the (index, list) tuple of one image's per-element values, without the floats
MODES = 16  # random cosines per frequency function (symmetry.features.RandomFourierFeatures, modes)


def _cosets(matrices: list, exact: bool) -> int:
    """Elements interpolated per image: one per coset of the quarter turns and flips (symmetry.features, _plan)."""
    if exact:
        return len(matrices)

    d4 = orbit_matrices().tolist()
    reps: list = []
    for m in matrices:
        if not any(_close(_mul(m, _transpose(r)), q) for r in reps for q in d4):
            reps.append(m)
    return len(reps)


def _mul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(2)) for j in range(2)] for i in range(2)]


def _transpose(a):
    return [[a[0][0], a[1][0]], [a[0][1], a[1][1]]]


def _close(a, b, tol: float = 1e-9) -> bool:
    return all(abs(a[i][j] - b[i][j]) < tol for i in range(2) for j in range(2))


def measure_budget(
    settings,
    meshes: list[float],
    groups: list,
    *,
    channels: int = 1,
    images: int | None = None,
    device: str = "cpu",
    processes: int = 1,
) -> Budget:
    """Memory of one :func:`symmetry.measurement.measure_dataset` call with one radius (symmetry/estimators.py,
    symmetry/features.py): ``settings`` a :class:`~symmetry.settings.Settings`, ``groups`` the
    :class:`~symmetry.groups.Group` s, ``channels`` per pixel (1 gray, 3 RGB, plus 1 with the contrast
    channel), ``images`` the number of images when known.

    Per group ``g`` (order ``G``) and mesh: the randomisation-null sums ``(B_perm, G, D)`` and bootstrap sums
    ``(B_boot, G, D)`` in float64 (the bulk), the draws of the images not yet folded into them (``K`` images of
    ``B_perm`` element indices and ``B_boot`` weights, at most 16) and the fold's indices, chunk of sums and Gram
    look-ups, the per-image values, the report's null and bootstrap draws. Per image, on the device: the
    windows of every mesh ``(R, M, C P_h)`` (``R`` coset representatives, ``P_h`` points at mesh ``h``) with the
    sampling positions and the mean removal of the largest mesh, the random features ``(R M, D)`` (three
    temporaries), and the random-feature projections ``(D, C P_h)`` (computed through ``(D, 16, P_h)`` float64
    cosines). At a mesh ``h < 1`` with ``1/h`` an integer, the native patches under the windows upsampled to
    ``S x S`` pixels each, ``S ~ 2 radius / h + 6 / h`` (float64, the resize's output and one temporary). With
    ``frechet``: window moments ``(G, C P_h, C P_h)`` per mesh. Not counted: the decoded images and their rasters at
    the other meshes (their size is the images', bounded by the loader's pixel limit) and the interpreter.
    """

    s = settings
    pool = "host" if str(device) == "cpu" else str(device)
    item = FLOAT64 if pool == "host" else 4  # float64 windows on a CPU, float32 on a GPU (measure_dataset)
    d, bp, bb, m = s.features, s.permutations, s.bootstrap, s.windows
    budget = Budget("this measurement")
    union: list = []
    for grp in groups:
        for e in grp:
            if not any(_close(e.matrix, u) for u in union):
                union.append(e.matrix)
    reps = _cosets([list(map(list, u)) for u in union], s.exact)
    points = [len(disk_offsets(s.radius, h)) for h in meshes]
    per_group_mesh = len(meshes)
    folds = []  # one fold at a time: its draws' row indices, a chunk of sums and the (K, G, G, D) differences; at
    # estimate with every image pending (K G^2 < B_perm), the Gram look-ups (B_perm K^2 indices and G B_perm K^2 values)
    for grp in groups:
        order = len(grp)
        budget.add(
            "the randomisation-null sums (permutations x elements x features)",
            bp * order * d * FLOAT64 * per_group_mesh,
            "--permutations or --features",
        )
        budget.add(
            "the bootstrap sums (bootstrap x elements x features)",
            bb * order * d * FLOAT64 * per_group_mesh,
            "--bootstrap or --features",
        )
        pending = pending_images(order, d)
        if images is not None:
            pending = min(pending, images)
        draws = pending * ((bp + bb) * FLOAT64 + order * (d + 1) * FLOAT64)
        budget.add(
            "the null draws of images not yet folded in (permutations x images)",
            draws * per_group_mesh,
            "--permutations",
        )
        gram = bp * pending * pending * (order + 1) * FLOAT64 if pending * order * order < bp else 0
        folds.append(
            bp * pending * FLOAT64 + NULL_CHUNK * order * d * FLOAT64 + 2 * pending * order * order * d * FLOAT64 + gram
        )
        budget.add(
            "the report's null and bootstrap draws",
            3 * (bp + bb) * order * FLOAT64 * per_group_mesh,
            "--permutations or --bootstrap",
        )
        if images is not None:
            per_image = images * (PER_IMAGE_ENTRY + order * PYTHON_FLOAT_ENTRY) * per_group_mesh
            budget.add("the per-image values (images x elements x meshes)", per_image, "--max-images")
    budget.add("the null draws of images not yet folded in (permutations x images)", max(folds), "--permutations")
    windows = [reps * m * channels * p * item for p in points]
    budget.add(
        "the windows of one image (windows x points x elements x meshes)",
        sum(windows) + max(windows) * (2 / channels + 2),
        "--windows, --radius or the finest --mesh",
        pool,
    )
    patches = [_patch_side(s.radius, h, s.interpolation) for h in meshes]
    patches = [
        m * channels * (2 * side**2 + 3 * (side // round(1 / h)) ** 2) * FLOAT64
        for h, side in zip(meshes, patches)
        if side
    ]
    if patches:  # meshes h < 1 with 1/h an integer: the native patches under the windows, upsampled (float64)
        budget.add(
            "the upsampled patches under the windows (windows x (2 radius / mesh)^2)",
            max(patches),
            "--windows, --radius or the finest --mesh",
        )
    budget.add(
        "the random features of one mesh (windows x elements x features)",
        3 * reps * m * d * item,
        "--windows or --features",
        pool,
    )
    budget.add(
        "the random-feature projections (features x points x meshes)",
        sum(d * channels * p * item for p in points) + max(2 * d * MODES * p * FLOAT64 for p in points),
        "--features, --radius or the finest --mesh",
        pool,
    )
    if s.frechet:
        dims = [channels * p for p in points]
        budget.add(
            "the window moments of --frechet (elements x points^2 x meshes)",
            sum(len(union) * dim * dim * FLOAT64 for dim in dims) + 4 * max(dims) ** 2 * FLOAT64,
            "--radius or the finest --mesh, or drop --frechet",
        )
        budget.add(
            "the windows of one image (windows x points x elements x meshes)",
            len(union) * m * max(dims) * item,
            "--windows, --radius or the finest --mesh",
            pool,
        )
    if processes > 1:  # all_reduce: the sums flattened, reduced and copied back
        sums = sum(t.bytes for t in budget.terms if "sums" in t.what)
        budget.add(
            "the randomisation-null sums (permutations x elements x features)", 2 * sums, "--permutations or --features"
        )
    return budget


def _patch_side(radius: float, mesh: float, interpolation: str) -> int:
    """Side of the upsampled patch under one window at a mesh ``h < 1`` with ``1/h`` an integer, else 0
    (symmetry.features, _upsampled_patches: ``n = ceil(2 r / k) + 6`` native pixels, ``k = 1/h``)."""

    k = round(1 / mesh)
    if not (mesh < 1 and k >= 2 and abs(k * mesh - 1) < 1e-12):
        return 0
    r = math.ceil(radius / mesh + SUPPORT_MARGIN[interpolation]) + 1
    return k * (math.ceil(2 * r / k) + 6)


def measure_options_budget(args, *, processes: int = 1) -> Budget:
    """:func:`measure_budget` of ``python -m symmetry.measure``'s options, resolved as
    :func:`symmetry.measurement.measure_dataset` resolves them (preset, defaults; several radii run one after
    the other, so the largest counts). Bad options raise the UsageError measure_dataset would raise."""

    chosen = defaults.preset_options(args.preset)
    mesh = args.mesh if args.mesh is not None else chosen.get("mesh", defaults.MESHES)
    given = {name: getattr(args, name, None) for name in Settings.__dataclass_fields__ if name != "exact"}
    options = {**{k: v for k, v in chosen.items() if k != "mesh"}, **{k: v for k, v in given.items() if v is not None}}
    radii = _radii(options.pop("radius", None))
    groups = parse_groups(args.group)
    images = _count_images(args)
    device = _device_name(args.device)
    worst: Budget | None = None
    for r in radii:
        settings = Settings.from_options(radius=r, **options)
        meshes = list(mesh) if isinstance(mesh, (list, tuple)) else [mesh]
        if len(radii) > 1:
            meshes = [float(h) * float(r) / PROFILE_RADIUS for h in meshes]
        meshes = check_meshes(meshes, settings.radius)
        channels = (3 if args.channels == "rgb" else 1) + (1 if settings.contrast else 0)
        budget = measure_budget(
            settings, meshes, groups, channels=channels, images=images, device=device, processes=processes
        )
        if worst is None or budget.total() > worst.total():
            worst = budget
    return worst.scaled(processes)


def _device_name(name: str | None) -> str:
    """``cpu`` or ``cuda:N`` for ``--device`` (auto: CUDA when available), as the run will place its tensors."""

    device = resolve_device(name)
    if device.type != "cuda":
        return "cpu"
    if local_processes() > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return f"cuda:{device.index or 0}"


def _count_images(args) -> int | None:
    """The number of images the run will read (listing the dataset: nothing is decoded), or None when unknown."""

    try:
        count = len(
            load_dataset(
                args.dataset, data_root=args.data_root, download=False, split=args.split, channels=args.channels
            )
        )
        if args.augment:
            count *= len(get_group(args.augment))
    except (SymmetryError, OSError, ValueError):
        return None  # measure_dataset reports the problem (or downloads) itself
    if isinstance(args.max_images, int) and args.max_images >= 1:
        count = min(count, args.max_images)
    return count


def check_measure(args, *, processes: int = 1) -> None:
    """Refuse ``python -m symmetry.measure`` options whose memory exceeds ``--max-memory`` or what is available."""
    limit = parse_memory(args.max_memory) if getattr(args, "max_memory", None) is not None else None
    check(measure_options_budget(args, processes=processes), limit)
