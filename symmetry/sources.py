"""Image sources and datasets: what every measurement and training loop iterates over.

An :class:`ImageSource` is one image, read lazily from a file (:func:`symmetry.decoders.read_image`) or held
as pixels; :meth:`ImageSource.at_mesh` resamples it to mesh ``h`` (:func:`symmetry.transforms.to_mesh`). A
:class:`Dataset` is a named sequence of sources; :func:`augment` closes one under a grid-exact group. The
catalogue of named datasets is :mod:`symmetry.datasets`; synthetic continuous fields
(:mod:`symmetry.synthetic`) are sources too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from symmetry.decoders import read_image
from symmetry.errors import DataError, UsageError
from symmetry.groups import Group, get_group
from symmetry.transforms import to_mesh, transform_image


@dataclass(eq=False)
class ImageSource:
    """One image of a dataset: a file read lazily by the channel rule, or pixels held in ``array``."""

    name: str
    path: Path | None = None
    channels: str = "gray"
    array: torch.Tensor | None = field(default=None, repr=False)
    max_pixels: int | None = None  # decoder limit (None: :func:`symmetry.decoders.pixel_limit`'s default)

    def load(self) -> torch.Tensor:
        """``(C, H, W)`` float64 pixels at native resolution."""
        if self.array is not None:
            return self.array
        if self.path is None:
            raise DataError(f"{self.name}: image source has neither a path nor pixels")
        return read_image(self.path, self.channels, max_pixels=self.max_pixels)

    def at_mesh(self, mesh: float) -> torch.Tensor:
        """The raster at mesh ``h`` (native pixels per sample)."""
        return to_mesh(self.load(), mesh)


@dataclass(eq=False)
class TransformedSource(ImageSource):
    """``pi~_A`` of another source, for a grid-exact element ``A`` (an exact pixel permutation)."""

    base: Any = None
    element: Any = None

    def _apply(self, image: torch.Tensor) -> torch.Tensor:
        if self.element.is_identity:
            return image
        return transform_image(image, self.element)[0]

    def load(self) -> torch.Tensor:
        return self._apply(self.base.load())

    def at_mesh(self, mesh: float) -> torch.Tensor:
        # resampling commutes with quarter turns and flips, and the base may be continuous (synthetic)
        return self._apply(self.base.at_mesh(mesh))


@dataclass(eq=False)
class Dataset(Sequence):
    """A named sequence of image sources."""

    name: str
    sources: list[ImageSource]
    description: str = ""

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Dataset(self.name, self.sources[index], self.description)
        return self.sources[index]

    def __iter__(self):
        return iter(self.sources)


def first_images(sources: Sequence, max_images: int | None, option: str = "--max-images") -> list:
    """The first ``max_images`` sources (all of them when None); ``max_images`` must be a whole number >= 1.

    A plain slice would read ``-1`` as "all but the last" and ``0`` as "none", both silently.
    """
    if max_images is None:
        return list(sources)
    if isinstance(max_images, bool) or not isinstance(max_images, (int, np.integer)) or max_images < 1:
        raise UsageError(f"{option} must be a whole number >= 1 (or omitted for all images), got {max_images!r}")
    return list(sources[: int(max_images)])


def augment(dataset: Dataset, group) -> Dataset:
    """Every image transformed by every element of a grid-exact group (exact pixel permutations).

    The result is closed under the group. Sources are ordered image by image, the
    group's elements in its order within each image (identity first).
    """
    g = group if isinstance(group, Group) else get_group(group)
    if not all(e.is_grid_exact for e in g):
        raise UsageError(f"augmentation needs quarter turns and flips only (e.g. flip, rot4, dih4), got {g.name}")
    name = getattr(dataset, "name", "images")
    sources = [
        TransformedSource(f"{s.name}@{e.name}", getattr(s, "path", None), base=s, element=e) for s in dataset for e in g
    ]
    return Dataset(f"{name}+{g.name}", sources, f"{name} closed under {g.name} ({len(g)} copies of each image)")
