"""Named random streams: every random draw in the toolkit comes from ``(seed, stream, *keys)``.

A stream name stands for one purpose (window centres, random features, the permutation null, ...), so two
purposes never share a sequence by accident and no file spells a bare integer key. The integer behind each name
is fixed forever: changing it changes every stored result that used the stream.
"""

from __future__ import annotations

import numpy as np
import torch

STREAMS: dict[str, int] = {
    "windows": 0,  # window centres of image ``index``: (seed, index), the historical layout (no stream key)
    "null": 7,  # permutation / randomisation null and bootstrap of one image
    "features": 11,  # random Fourier feature draws
    "split": 13,  # train/test data draws of an experiment
    "noise": 17,  # observation noise
    "init": 19,  # model initialisation
    "batches": 23,  # mini-batch order and crops
    "epochs": 7_919,  # the order of a patch dataset's images in each epoch (analysis.tasks.PatchDataset)
    "evaluation": 104_729,  # noise of the fixed evaluation examples (analysis.tasks)
}


def _key(stream: str) -> int:
    if stream not in STREAMS:
        raise KeyError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
    return STREAMS[stream]


def entropy(seed: int, stream: str, *keys: int) -> list[int]:
    """The seed sequence of ``stream`` for ``seed`` and extra integer ``keys`` (image index, epoch, ...)."""
    base = [abs(int(seed))] if stream == "windows" else [abs(int(seed)), _key(stream)]
    return base + [abs(int(k)) for k in keys]


def rng(seed: int, stream: str, *keys: int) -> np.random.Generator:
    """A NumPy generator for ``(seed, stream, *keys)``."""
    return np.random.default_rng(entropy(seed, stream, *keys))


def seed_of(seed: int, stream: str, *keys: int) -> int:
    """A 62-bit integer seed for ``(seed, stream, *keys)``, for libraries that take one integer."""
    return int(rng(seed, stream, *keys).integers(0, 2**62))


def torch_generator(seed: int, stream: str, *keys: int, device: torch.device | str | None = None) -> torch.Generator:
    """A torch generator for ``(seed, stream, *keys)`` on ``device`` (CPU by default)."""
    return torch.Generator(device=device or "cpu").manual_seed(seed_of(seed, stream, *keys))
