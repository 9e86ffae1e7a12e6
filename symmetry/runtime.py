"""Device choice, the process group under ``torchrun``, the progress bar, and the guard that turns user errors into
one-line messages (:func:`cli_entry` and :class:`CliParser`, defined in the torch-free :mod:`symmetry.errors` so that
a command line prints ``--help`` without importing torch, and re-exported here)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from symmetry.errors import CliParser, UsageError, cli_entry  # noqa: F401 - CliParser, cli_entry: re-exported


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` force one."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    return device


# ---- progress -------------------------------------------------------------------------


class Progress:
    """Handle of :func:`progress`: ``update(completed, **fields)``, ``advance()`` and ``print(text)``."""

    def __init__(self, bar, task, console, quiet: bool) -> None:
        self._bar, self._task, self._console, self._quiet = bar, task, console, quiet

    def update(self, completed: int | None = None, **fields: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=completed, **fields)

    def advance(self, amount: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def print(self, text: str) -> None:
        """A plain message on stderr (above the bar), unless quiet."""
        if not self._quiet:
            self._console = self._console or _console()
            self._console.print(text, highlight=False, markup=False)


def _console():
    """A rich console on stderr."""
    from rich.console import Console  # lazy: 0.1 s of CPU to import, needed only to show a bar or a message

    return Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def progress(
    total: int | None,
    label: str,
    *,
    enabled: bool = True,
    quiet: bool = False,
    completed: int = 0,
    fields: dict[str, str] | None = None,
    transient: bool = False,
    unit: str = "items",
) -> Iterator[Progress]:
    """The toolkit's one progress bar (rich, on stderr): ``with progress(n, "train") as bar: bar.advance()``.

    ``fields`` are extra columns shown as ``name value`` and updated by ``bar.update(name=...)``. ``enabled=False``
    (or ``quiet``) shows no bar; ``bar.print`` still prints unless ``quiet``. ``unit="bytes"`` shows sizes and a
    transfer speed instead of ``done/total`` (the downloader); ``total=None`` is an unknown total.
    """
    if unit not in ("items", "bytes"):
        raise ValueError(f"unit must be 'items' or 'bytes', got {unit!r}")
    if not enabled or quiet:
        yield Progress(None, None, None, quiet)  # its console is made if it prints (rich takes 0.1 s to import)
        return
    console = _console()
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    from rich.progress import Progress as RichProgress

    fields = dict(fields or {})
    columns = [TextColumn(label), BarColumn()]
    columns += [DownloadColumn(), TransferSpeedColumn()] if unit == "bytes" else [MofNCompleteColumn()]
    columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields]
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with RichProgress(*columns, console=console, transient=transient) as bar:
        task = bar.add_task(label, total=total, completed=completed, **fields)
        yield Progress(bar, task, console, quiet)


# ---- several processes (torchrun) -----------------------------------------------------


@dataclass
class DistInfo:
    """This process's place in the process group (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when setup_distributed created the group (and its caller destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group that ``torchrun`` (or the caller) describes.

    An already initialised group is used as it is. Otherwise, when ``WORLD_SIZE > 1`` in
    the environment (``torchrun`` sets it with ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT``), the group is created: gloo on the CPU, nccl on CUDA with this process
    on GPU ``LOCAL_RANK``.
    """
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    if device.type == "cuda":
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local, True)


def rank_device(device: torch.device, info: DistInfo) -> torch.device:
    """``device`` with CUDA replaced by this rank's GPU (``cuda:LOCAL_RANK``) when there are several processes."""
    if info.world > 1 and device.type == "cuda":
        return torch.device("cuda", info.local_rank)
    return device


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a picklable object)."""
    if info.world <= 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if info.world <= 1:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum of ``tensor`` over the ranks (a new tensor on ``tensor``'s device); nccl reduces on this GPU."""
    if info.world <= 1:
        return tensor
    device = tensor.device
    if dist.get_backend() == "nccl":
        work = tensor.to(torch.device("cuda", torch.cuda.current_device()), copy=True)
    else:
        work = tensor.to("cpu", copy=True)
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(device)


THREADS_ENV = "OMP_NUM_THREADS"


def set_threads(threads: int | None = None) -> int:
    """Set this process's CPU threads: ``threads``, else ``$OMP_NUM_THREADS``, else 1; returns the number set.

    One thread per process is the default: on a shared or small CPU torch's default (one per core) made the small
    models and estimators here several times slower (docs/performance.md, 'Threads on a shared CPU'); give more
    on an idle many-core machine. A bad value is a :class:`UsageError`.
    """
    source = "--threads"
    if threads is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        source, threads = (f"${THREADS_ENV}", env) if env else ("", 1)
    try:
        count = int(threads)
    except (TypeError, ValueError):
        count = 0
    if count < 1 or count > 4096:
        raise UsageError(f"{source} must be a whole number of threads from 1 to 4096, got {threads!r}")
    torch.set_num_threads(count)
    return count
