"""Restoration tasks: degradations, training patches and evaluation sets.

Tasks (:data:`TASKS`):

- ``denoise``: additive white Gaussian noise of standard deviation ``sigma`` in 0-255
  units (``sigma / 255`` on the ``[0, 1]`` images), not clipped;
- ``sr``: super-resolution by ``scale`` in :data:`SR_SCALES`; the HR image is cropped to a
  multiple of the scale and the LR input is MATLAB's bicubic ``imresize(hr, 1/scale)``
  (:func:`symmetry.transforms.imresize`), clipped and rounded to 8 bits like the LR PNGs of
  the benchmarks;
- ``derain``: (rainy, clean) pairs of Rain100L (:func:`symmetry.datasets.load_pairs`).

Splits: ``rain100l`` has train and test; ``div2k`` train and valid (``test`` reads valid);
datasets without splits (``skimage``, ``folder:PATH``) hold out every fourth image
(indices 3, 7, 11, ...) as valid/test and train on the rest; ``synthetic:...`` draws
separate images per split. ``valid`` is the held-out data used for monitoring.

Training samples come from :class:`PatchDataset`: sample ``k`` of the endless stream is a
function of ``(seed, k)`` only (image from a per-epoch permutation, crop position,
augmentation element, noise), so any process can make any sample: a run resumes
exactly and data-parallel ranks share one global batch without communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from symmetry.datasets import load_dataset, load_pairs
from symmetry.decoders import LUMA_BT601
from symmetry.errors import DataError, UsageError
from symmetry.groups import get_group
from symmetry.streams import rng, torch_generator
from symmetry.transforms import imresize, transform_image

TASKS = ("denoise", "sr", "derain")
SR_SCALES = (2, 3, 4)
HELD_OUT_EVERY = 4
"""Datasets without splits hold out images ``i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1``."""


# ---- degradations ---------------------------------------------------------------------


def add_noise(clean: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``clean + sigma / 255 * N(0, 1)`` (not clipped); ``generator`` fixes the noise."""
    noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype, device=clean.device)
    return clean + (sigma / 255.0) * noise


def crop_to_multiple(image: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop ``(..., H, W)`` at the bottom/right so that H and W are multiples of ``scale``."""
    h, w = image.shape[-2:]
    hh, ww = h - h % scale, w - w % scale
    if hh < 1 or ww < 1:
        raise DataError(f"an image of {h}x{w} is smaller than the scale {scale}")
    return image[..., :hh, :ww]


def bicubic_lr(hr: torch.Tensor, scale: int, quantize: bool = True) -> torch.Tensor:
    """LR input of SR: MATLAB bicubic ``imresize(hr, 1/scale)`` of an HR image whose sides are multiples of ``scale``.

    ``quantize`` clips to ``[0, 1]`` and rounds to 8-bit levels, as saving the LR PNG does.
    """
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise UsageError(f"HR size {h}x{w} is not a multiple of the scale {scale}; crop it first")
    lr = imresize(hr.double(), size=(h // scale, w // scale))
    if quantize:
        lr = torch.round(lr.clamp(0, 1) * 255.0) / 255.0
    return lr.to(hr.dtype)


def check_scale(task: str, scale: int) -> int:
    if task == "sr":
        if scale not in SR_SCALES:
            raise UsageError(f"scale {scale} is not supported for sr; choose one of {SR_SCALES}")
    elif scale != 1:
        raise UsageError(f"task {task} works at scale 1, got scale {scale}")
    return scale


def check_augment_group(name: str):
    """The group of a grid-exact augmentation (quarter turns and flips only) or a :class:`UsageError`."""

    g = get_group(name)
    if not all(e.is_grid_exact for e in g):
        raise UsageError(
            f"augmentation needs a group of quarter turns and flips (e.g. flip, rot4, dih4); {g.name} has "
            f"non-grid elements ({', '.join(e.name for e in g if not e.is_grid_exact)})"
        )
    return g


# ---- images in memory -----------------------------------------------------------------


def _compact(t: torch.Tensor) -> torch.Tensor:
    """uint8 when ``t`` holds exact 8-bit levels in [0, 1] (4-8x less memory), else float32."""
    t = t.detach().cpu()
    q = torch.round(t * 255.0)
    if t.min() >= 0 and t.max() <= 1 and torch.equal(q / 255.0, t.double()):
        return q.to(torch.uint8)
    return t.float()


def _expand(t: torch.Tensor) -> torch.Tensor:
    return t.float() / 255.0 if t.dtype == torch.uint8 else t.float()


@dataclass
class Item:
    """One image of a task in memory: the target, and the input when it is fixed (derain, sr)."""

    name: str
    target_store: torch.Tensor
    input_store: torch.Tensor | None = None

    @property
    def target(self) -> torch.Tensor:
        return _expand(self.target_store)

    @property
    def input(self) -> torch.Tensor | None:
        return None if self.input_store is None else _expand(self.input_store)

    @property
    def eight_bit(self) -> bool:
        """Targets are 8-bit images (outputs are then scored after rounding to 8 bits)."""
        return self.target_store.dtype == torch.uint8

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.target_store.shape[-2:])


def _load_source(source, channels: str) -> torch.Tensor:
    if hasattr(source, "load"):
        img = source.load()
    else:  # synthetic fields: raster at the native mesh
        img = source.at_mesh(1.0)
    if img.dim() == 2:
        img = img[None]
    if channels == "rgb" and img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    if channels == "gray" and img.shape[0] == 3:
        img = (torch.tensor(LUMA_BT601, dtype=img.dtype)[:, None, None] * img).sum(0, keepdim=True)
    return img


def _held_out(n: int, split: str) -> list[int]:
    test = [i for i in range(n) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1] or [n - 1]
    if split == "train":
        train = [i for i in range(n) if i not in test]
        return train or list(range(n))
    return test


def _sources(data: str, split: str, data_root, channels: str):

    if split not in ("train", "valid", "test"):
        raise UsageError(f"split must be train, valid or test, got {split!r}")
    ch = "rgb" if channels == "rgb" else "gray"
    if data == "rain100l":
        split = "train" if split == "train" else "test"
        return list(load_dataset("rain100l", data_root=data_root, split=split, channels=ch))
    if data == "div2k":
        split = "train" if split == "train" else "valid"
        return list(load_dataset("div2k", data_root=data_root, split=split, channels=ch))
    if data.startswith("synthetic"):
        return list(load_dataset(data, split=split))
    sources = list(load_dataset(data, data_root=data_root, split="train", channels=ch))
    return [sources[i] for i in _held_out(len(sources), split)]


def task_units(
    task: str,
    data: str,
    *,
    split: str = "train",
    data_root=None,
    channels: str = "rgb",
    max_images: int | None = None,
) -> list:
    """What one :class:`Item` is made from, undecoded: image sources, or ``(rainy, clean)`` pairs for derain."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "derain":
        if data != "rain100l":
            raise UsageError(f"task derain needs paired data (rain100l), got {data!r}")
        pairs = load_pairs("rain100l", data_root=data_root, split="train" if split == "train" else "test")
        return list(pairs[:max_images])
    sources = _sources(data, split, data_root, channels)
    if not sources:
        raise DataError(f"dataset {data!r} has no {split} images")
    return sources[:max_images]


def make_item(task: str, unit, channels: str = "rgb", scale: int = 1) -> Item:
    """Decode one unit of :func:`task_units` into an :class:`Item` (SR: modcropped HR and its bicubic LR)."""
    if task == "derain":
        rainy, clean = unit
        x, y = _load_source(rainy, channels), _load_source(clean, channels)
        if x.shape != y.shape:
            raise DataError(f"{rainy.name} and {clean.name} differ in size: {tuple(x.shape)} vs {tuple(y.shape)}")
        return Item(clean.name.split("/")[-1], _compact(y), _compact(x))
    img = _load_source(unit, channels)
    if task == "sr":
        hr = crop_to_multiple(img, scale)
        lr = bicubic_lr(hr, scale, quantize=_compact(hr).dtype == torch.uint8)
        return Item(unit.name, _compact(hr), _compact(lr))
    return Item(unit.name, _compact(img))


def load_items(
    task: str,
    data: str,
    *,
    split: str = "train",
    data_root=None,
    channels: str = "rgb",
    scale: int = 1,
    max_images: int | None = None,
) -> list[Item]:
    """The images of ``data``'s ``split`` for ``task``, loaded into memory (see the module docstring).

    Training on large sets uses :func:`analysis.patches.lazy_items` instead (decoded once, memory-mapped).
    """
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    check_scale(task, scale)
    units = task_units(task, data, split=split, data_root=data_root, channels=channels, max_images=max_images)
    return [make_item(task, unit, channels, scale) for unit in units]


# ---- training patches -----------------------------------------------------------------


@dataclass
class Example:
    """One evaluation image: degraded input, clean target (float32 ``(C, H, W)``) and its name."""

    name: str
    input: torch.Tensor
    target: torch.Tensor
    eight_bit: bool = True


def _window(store, top: int, left: int, size: int) -> torch.Tensor:
    """``store[:, top:top+size, left:left+size]`` as float32 in [0, 1]; ``store`` a tensor or a (memory-mapped)
    NumPy array, of which only the window is read and copied."""
    if isinstance(store, np.ndarray):
        store = torch.from_numpy(np.array(store[:, top : top + size, left : left + size]))
        return _expand(store)
    return _expand(store[:, top : top + size, left : left + size])


class PatchDataset(torch.utils.data.Dataset):
    """Random training patches ``(input, target)`` of a task; sample ``k`` depends only on ``(seed, k)``.

    ``patch_size`` is the target (HR) patch side; SR inputs are ``patch_size // scale``.
    Epoch ``e`` visits every image once, in the order of a permutation seeded by
    ``(seed, e)``; sample ``k`` belongs to epoch ``k // len(self)``. ``augment`` names a
    grid-exact group; each sample is transformed by one of its elements drawn uniformly.
    Indices beyond ``len(self)`` are later epochs (the stream is endless).
    """

    def __init__(
        self,
        items: list[Item],
        task: str,
        *,
        patch_size: int,
        scale: int = 1,
        sigma: float = 25.0,
        augment: str | None = None,
        seed: int = 0,
    ) -> None:
        if not items:
            raise DataError("no training images")
        check_scale(task, scale)
        if patch_size % scale:
            raise UsageError(f"patch size {patch_size} must be a multiple of the scale {scale}")
        small = [it for it in items if min(it.size) < patch_size]
        if small:
            worst = min(small, key=lambda it: min(it.size))
            h, w = worst.size
            raise UsageError(
                f"patch size {patch_size} is larger than {len(small)} training image(s), e.g. {worst.name!r} "
                f"({h}x{w}); use --patch-size <= {min(min(it.size) for it in items)}"
            )
        self.items, self.task, self.patch_size, self.scale = items, task, patch_size, scale
        self.sigma, self.seed = float(sigma), int(seed)
        self.elements = list(check_augment_group(augment)) if augment else None
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.items)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 8:
                self._perms.clear()
            self._perms[epoch] = rng(self.seed, "epochs", epoch).permutation(len(self.items))
        return self._perms[epoch]

    def image_of(self, k: int) -> int:
        """Index of the image that sample ``k`` is cut from."""
        n = len(self.items)
        return int(self._permutation(k // n)[k % n])

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if k < 0:
            raise IndexError(k)
        return self.sample(self.image_of(k), k)

    def sample(self, image: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample number ``k`` cut from image ``image``: crop, augmentation and noise depend on ``(seed, k)``."""
        item = self.items[image]
        draws = np.random.default_rng([self.seed, int(k)])  # per-sample draws, keyed by (seed, k)
        s, p = self.scale, self.patch_size
        h, w = item.size
        top = int(draws.integers(0, (h - p) // s + 1)) * s
        left = int(draws.integers(0, (w - p) // s + 1)) * s
        target_store = item.target_store
        input_store = item.input_store if self.task != "denoise" else None
        target = _window(target_store, top, left, p)
        if self.task == "sr":
            inp = _window(input_store, top // s, left // s, p // s)
        elif self.task == "derain":
            inp = _window(input_store, top, left, p)
        else:
            inp = None
        if self.elements is not None:
            element = self.elements[int(draws.integers(0, len(self.elements)))]
            target = transform_image(target, element)[0]
            if inp is not None:
                inp = transform_image(inp, element)[0]
        if inp is None:  # denoise: fresh noise per sample
            gen = torch.Generator().manual_seed(int(draws.integers(0, 2**62)))
            inp = add_noise(target, self.sigma, gen)
        return inp.contiguous(), target.contiguous()

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples ``indices`` stacked into ``(B, C, h, w)`` inputs and ``(B, C, H, W)`` targets."""
        pairs = [self[int(k)] for k in indices]
        return torch.stack([a for a, _ in pairs]), torch.stack([b for _, b in pairs])

    def steps_per_epoch(self, batch_size: int) -> float:
        return len(self.items) / batch_size


# ---- evaluation sets ------------------------------------------------------------------


def _centre_box(h: int, w: int, crop: int, scale: int) -> tuple[int, int, int, int]:
    ch, cw = min(crop, h), min(crop, w)
    ch, cw = ch - ch % scale, cw - cw % scale
    top = ((h - ch) // 2) // scale * scale
    left = ((w - cw) // 2) // scale * scale
    return top, left, ch, cw


def eval_examples(
    items: list[Item],
    task: str,
    *,
    scale: int = 1,
    sigma: float = 25.0,
    seed: int = 0,
    crop: int | None = None,
    limit: int | None = None,
) -> list[Example]:
    """Deterministic evaluation pairs: full images (or centre ``crop``), noise fixed by ``(seed, index)``.

    SR inputs are cut from the LR of the whole image, so a centre crop sees the same LR
    pixels as the full image.
    """
    check_scale(task, scale)
    out = []
    for i, item in enumerate(items[:limit]):
        target, inp = item.target, item.input
        if crop is not None:
            h, w = item.size
            top, left, ch, cw = _centre_box(h, w, crop, scale)
            target = target[:, top : top + ch, left : left + cw]
            if inp is not None:
                s = scale
                inp = inp[:, top // s : (top + ch) // s, left // s : (left + cw) // s]
        if inp is None:
            gen = torch_generator(seed, "evaluation", i)
            inp = add_noise(target, sigma, gen)
        out.append(Example(item.name, inp.contiguous(), target.contiguous(), item.eight_bit))
    return out


def baseline(example: Example, task: str, scale: int = 1) -> torch.Tensor:
    """The trivial restoration: the input itself, or its bicubic upscaling for SR.

    The SR upscaling is :func:`symmetry.transforms.imresize` in the input's dtype, the very map of the SR
    networks' skip connection (``analysis.models.Backbone``), so the baseline is bit for bit what a network
    with a zero residual returns.
    """
    if task == "sr":
        return imresize(example.input, scale)
    return example.input


__all__ = [
    "TASKS",
    "SR_SCALES",
    "Item",
    "Example",
    "PatchDataset",
    "add_noise",
    "bicubic_lr",
    "crop_to_multiple",
    "check_augment_group",
    "check_scale",
    "load_items",
    "task_units",
    "make_item",
    "eval_examples",
    "baseline",
]
