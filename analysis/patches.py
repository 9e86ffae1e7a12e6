"""Training patches of large image sets without holding them in memory, and the per-rank share of a global batch.

:func:`lazy_items` returns one :class:`LazyItem` per training image: its size is read from the file header, and its
pixels are decoded once (by :func:`analysis.tasks.make_item`, the same code as the in-memory path) into raw ``.npy``
files under a cache folder keyed by a content fingerprint of the image file(s) and the task (never pickled: read
with ``allow_pickle=False``). A patch memory-maps the file, copies its window and unmaps it, so a process holds a
few patches, not the data set; images are decoded the first time a process needs them, so each data-parallel rank
decodes and reads only its own share.

:class:`ShardedPatches` lays a global batch of ``B`` samples over the images: position ``j`` of every batch draws
from shard ``j mod m`` (``m = min(B, n)``; shard ``s`` holds images ``i`` with ``i mod m == s``), visiting each
image of its shard once per shard epoch in a permutation seeded by ``(seed, j, epoch)``; the crop, augmentation
and noise of position ``j`` of step ``k`` are those of sample ``k B + j`` of :class:`analysis.tasks.PatchDataset`.
The batch of step ``k`` is a function of ``k`` alone (fit's exact resume), is the same for any number of ranks that
divides ``B``, and rank ``r`` of ``w`` reads only the shards of its positions ``[r B/w, (r+1) B/w)``: with
``n >= B`` the ranks partition the images.

Each cache entry ends with ``digest.txt`` (written last: the hash of each array file). An entry without it is
incomplete and decoded again; an entry whose files no longer match it (replaced or lost) is refused with a one-line
:class:`DataError` the first time a process opens it (one read of the files per process and image).

Cache folder: ``$SYMMETRY_CACHE``, else ``$XDG_CACHE_HOME/symmetry-restoration`` (``~/.cache/...``); a folder that
cannot be written leaves the decoded images in memory (the eager behaviour) with a note.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

from analysis.rundir import data_fingerprint
from analysis.tasks import Item, PatchDataset, check_scale, make_item, task_units
from symmetry.errors import DataError, SymmetryError
from symmetry.io import atomic_write_bytes
from symmetry.sources import ImageSource

CACHE_ENV = "SYMMETRY_CACHE"
CACHE_FORMAT = "analysis.patches/1"
DIGEST_FILE = "digest.txt"
"""Written last into a cache entry: the hash of each array file, so an incomplete or changed entry is noticed."""
_SHARD_KEY = 15_485_863  # separates the shard-permutation stream
_HASH_CHUNK = 1 << 20


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """The folder of decoded images (module docstring)."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "symmetry-restoration"


def _paths(unit) -> list[Path] | None:
    """The files a unit is decoded from, or ``None`` when it is not plain files (arrays, synthetic, transformed)."""
    parts = unit if isinstance(unit, tuple) else (unit,)
    paths = []
    for src in parts:
        if type(src) is not ImageSource or src.array is not None or src.path is None:
            return None
        paths.append(Path(src.path))
    return paths


def content_key(unit, task: str, channels: str, scale: int) -> str | None:
    """A 32-hex-digit fingerprint of the unit's file contents and of how they are decoded (task, channels, scale)."""
    paths = _paths(unit)
    if paths is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{CACHE_FORMAT}\0{task}\0{channels}\0{scale}\0".encode())
    for path in paths:
        try:
            with open(path, "rb") as f:
                while chunk := f.read(_HASH_CHUNK):
                    h.update(chunk)
        except OSError as err:
            raise DataError(f"{path}: cannot read ({err.strerror})") from None
        h.update(b"\0")
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _header_size(path: Path) -> tuple[int, int] | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        return h, w
    except Exception:  # an unusual file: its size is taken from decoding it
        return None


class LazyItem:
    """A training image decoded on first use into ``<cache>/<key>/{target,input}.npy`` and memory-mapped per access.

    ``target_store`` / ``input_store`` are read-only ``np.memmap`` arrays ``(C, H, W)`` (uint8 for 8-bit images),
    opened anew at each access so that only the pages of a patch are touched and then released.
    """

    def __init__(self, unit, task: str, channels: str, scale: int, key: str, cache: Path) -> None:
        self.unit, self.task, self.channels, self.scale, self.key = unit, task, channels, scale, key
        self.folder = cache / key[:2] / key
        self.name = unit[1].name.split("/")[-1] if isinstance(unit, tuple) else unit.name
        self._memory: Item | None = None  # when the cache cannot be written
        self._size: tuple[int, int] | None = None
        self.decoded = 0  # times this process decoded the image (tests, benchmarks)
        self.opened = 0  # times this process mapped its pixels
        self._verified = False  # the entry's files matched their digest in this process

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            if self._complete():
                self._size = tuple(self._open("target").shape[-2:])
            else:
                paths = _paths(self.unit)
                hw = _header_size(paths[-1]) if paths else None
                if hw is None:
                    self._size = tuple(self.target_store.shape[-2:])
                else:
                    s = self.scale if self.task == "sr" else 1
                    self._size = (hw[0] - hw[0] % s, hw[1] - hw[1] % s)
        return self._size

    def _write(self, item: Item) -> None:

        self.folder.mkdir(parents=True, exist_ok=True)
        for which, t in (("target", item.target_store), ("input", item.input_store)):
            if t is None:
                continue
            buf = io.BytesIO()
            np.save(buf, t.numpy(), allow_pickle=False)
            path = self.folder / f"{which}.npy"
            try:
                atomic_write_bytes(path, buf.getvalue())
            except SymmetryError:
                if not path.is_file():  # another rank writing the same image wins; anything else is real
                    raise
        digests = {which: _file_digest(self.folder / f"{which}.npy") for which in self._arrays(item)}
        atomic_write_bytes(self.folder / DIGEST_FILE, "".join(f"{k} {v}\n" for k, v in digests.items()).encode())

    @staticmethod
    def _arrays(item: Item) -> list[str]:
        return ["target"] + (["input"] if item.input_store is not None else [])

    def _complete(self) -> bool:
        """Whether the entry was written to the end (its digest file exists); an incomplete one is decoded again."""
        return (self.folder / DIGEST_FILE).is_file()

    def _verify(self) -> None:
        """Once per process: every array file of the entry matches the digest written with it."""
        if self._verified:
            return
        advice = f"delete {self.folder} and run again"
        try:
            lines = (self.folder / DIGEST_FILE).read_text().split("\n")
            digests = dict(line.split(" ", 1) for line in lines if line)
        except (OSError, UnicodeDecodeError, ValueError):
            raise DataError(f"{self.folder}: unreadable cache digest; {advice}") from None
        if "target" not in digests or not set(digests) <= {"target", "input"}:
            raise DataError(f"{self.folder}: malformed cache digest; {advice}")
        for which, digest in digests.items():
            path = self.folder / f"{which}.npy"
            if not path.is_file() or _file_digest(path) != digest:
                raise DataError(f"{path}: the cached image was changed or lost after it was decoded; {advice}")
        self._verified = True

    def _ensure(self) -> None:
        if self._memory is not None or self._complete():
            return
        item = make_item(self.task, self.unit, self.channels, self.scale)
        self.decoded += 1
        try:
            self._write(item)
        except (OSError, SymmetryError) as err:
            note = f"cannot cache decoded images in {self.folder.parent.parent} ({err}); keeping them in memory"
            print(f"note: {note} (set {CACHE_ENV} to a writable folder)", file=sys.stderr)
            self._memory = item

    def _open(self, which: str):
        self._verify()
        path = self.folder / f"{which}.npy"
        if not path.is_file():
            return None
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{path}: corrupt cache file ({err}); delete {self.folder} and run again") from None

    def _store(self, which: str):
        self._ensure()
        if self._memory is not None:
            return getattr(self._memory, f"{which}_store")
        self.opened += 1
        return self._open(which)

    @property
    def target_store(self):
        return self._store("target")

    @property
    def input_store(self):
        return self._store("input")

    def load(self) -> Item:
        """The image as an in-memory :class:`Item` (copies the cached arrays)."""
        t, x = self.target_store, self.input_store
        return Item(self.name, torch.from_numpy(np.array(t)), None if x is None else torch.from_numpy(np.array(x)))


def lazy_items(
    task: str,
    data: str,
    *,
    split: str = "train",
    data_root=None,
    channels: str = "rgb",
    scale: int = 1,
    max_images: int | None = None,
    cache: str | os.PathLike | None = None,
) -> list:
    """The images of :func:`analysis.tasks.load_items`, as :class:`LazyItem` where they are files (else in memory).

    Nothing is decoded here: sizes come from the file headers, pixels on first use (module docstring).
    """

    check_scale(task, scale)
    root = cache_root(cache)
    out = []
    for unit in task_units(task, data, split=split, data_root=data_root, channels=channels, max_images=max_images):
        key = content_key(unit, task, channels, scale)
        if key is None:  # not plain files (arrays, synthetic fields): small, kept in memory
            out.append(make_item(task, unit, channels, scale))
        else:
            out.append(LazyItem(unit, task, channels, scale, key, root))
    return out


def items_fingerprint(items: list) -> str:
    """The run's data fingerprint: of the pixels for in-memory items (as before), of the content keys for lazy ones."""

    if not any(isinstance(it, LazyItem) for it in items):
        tensors = [t for it in items for t in (it.target_store, it.input_store) if t is not None]
        return data_fingerprint(tensors, [it.name for it in items])
    h = hashlib.blake2b(digest_size=8)
    for it in items:
        h.update(f"{it.name}\0".encode())
        if isinstance(it, LazyItem):
            h.update(it.key.encode())
        else:
            h.update(data_fingerprint([t for t in (it.target_store, it.input_store) if t is not None]).encode())
    return h.hexdigest()


class ShardedPatches:
    """The global batch of every step over image shards (module docstring); ``batch_of_step(k, rank, world)``."""

    def __init__(self, dataset: PatchDataset, batch_size: int) -> None:
        if batch_size < 1:
            raise DataError(f"batch size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size = dataset, int(batch_size)
        n = len(dataset)
        self.m = min(self.batch_size, n)
        self.shards = [list(range(s, n, self.m)) for s in range(self.m)]
        self._perms: dict[tuple[int, int], np.ndarray] = {}

    def positions(self, rank: int = 0, world: int = 1) -> range:
        """Positions of the global batch that rank ``rank`` of ``world`` computes."""
        if world < 1 or not 0 <= rank < world or self.batch_size % world:
            raise DataError(f"rank {rank} of {world} does not divide a batch of {self.batch_size}")
        per = self.batch_size // world
        return range(rank * per, (rank + 1) * per)

    def images_of_rank(self, rank: int = 0, world: int = 1) -> list[int]:
        """The images rank ``rank`` ever reads (sorted)."""
        return sorted({i for j in self.positions(rank, world) for i in self.shards[j % self.m]})

    def image_at(self, k: int, j: int) -> int:
        """The image of position ``j`` of step ``k``."""
        shard = self.shards[j % self.m]
        epoch, pos = divmod(int(k), len(shard))
        key = (j, epoch)
        if key not in self._perms:
            if len(self._perms) > 4 * self.batch_size:
                self._perms.clear()
            self._perms[key] = np.random.default_rng([self.dataset.seed, _SHARD_KEY, j, epoch]).permutation(len(shard))
        return shard[int(self._perms[key][pos])]

    def batch_of_step(self, k: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's part ``(inputs, targets)`` of the global batch of step ``k``; a function of ``k`` alone."""
        if k < 0:
            raise IndexError(k)
        pairs = [self.dataset.sample(self.image_at(k, j), k * self.batch_size + j) for j in self.positions(rank, world)]
        return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])


__all__ = ["CACHE_ENV", "LazyItem", "ShardedPatches", "cache_root", "content_key", "items_fingerprint", "lazy_items"]
