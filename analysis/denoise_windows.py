"""Denoising samples for the bias-variance experiment: window crops of clean gray images with fixed Gaussian noise.

Every dataset is cut into non-overlapping ``window x window`` samples; the training pool and the test set come
from different images. Seed ``s`` trains on the samples ``[s * block, s * block + n_train)`` of the shuffled pool
(:func:`seed_subset`), so the training sets of different seeds are disjoint. Synthetic images are scaled to a pixel
standard deviation of ``signal_std``; ``shadow:SPEC`` datasets are polar (:func:`shadow`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from analysis.tasks import load_items
from symmetry.errors import UsageError
from symmetry.synthetic import DEFAULTS, parse_spec

DATA_KEYS = ("window", "radius", "sigma", "signal_std", "pool_windows", "test_windows", "data_seed", "max_images")


def window_tiles(image: torch.Tensor, window: int) -> torch.Tensor:
    """Non-overlapping ``window x window`` tiles of a ``(1, H, W)`` image: ``(K, window, window)``."""
    img = image[0]
    h, w = (img.shape[0] // window) * window, (img.shape[1] // window) * window
    t = img[:h, :w].reshape(h // window, window, w // window, window).permute(0, 2, 1, 3)
    return t.reshape(-1, window, window)


SHADOW = "shadow:"
"""Spec prefix of a polar dataset: ``shadow:SPEC`` is ``s = relu(x) + SHADOW_GAIN * relu(x)`` shifted down by
``SHADOW_SHIFT`` pixels (bright atoms casting a dimmer copy below them). Its covariance is, like every stationary
covariance, unchanged by a half turn, so linear filters cannot see its asymmetry; a half turn (or an up-down flip)
moves the shadow above the atom, which a nonlinear model can tell apart: rot2 and larger groups pay a bias."""


SHADOW_GAIN, SHADOW_SHIFT = 0.6, 3


def shadow(image: torch.Tensor) -> torch.Tensor:
    """The ``shadow:`` transform of a ``(1, H, W)`` image (zeros enter at the top edge)."""
    lit = image.clamp(min=0)
    below = torch.zeros_like(lit)
    below[:, SHADOW_SHIFT:] = lit[:, :-SHADOW_SHIFT]
    return lit + SHADOW_GAIN * below


def clean_images(spec: str, split: str, count: int | None, data_root: str | None) -> list[torch.Tensor]:
    """Clean gray ``(1, H, W)`` float64 images of a dataset split (``count`` images for synthetic data)."""
    if spec.startswith(SHADOW):
        return [shadow(im) for im in clean_images(spec[len(SHADOW) :], split, count, data_root)]
    data = f"{spec},n={count}" if spec.startswith("synthetic") and count else spec
    items = load_items("denoise", data, split=split, data_root=data_root, channels="gray", max_images=count)
    return [it.target.to(torch.float64) for it in items]


def base_spec(spec: str) -> str:
    return spec[len(SHADOW) :] if spec.startswith(SHADOW) else spec


def split_seed(data_seed: int, split: str) -> int:
    return int(np.random.default_rng([data_seed, {"train": 1, "test": 2}[split]]).integers(0, 2**62))


@lru_cache(maxsize=8)
def pools(spec: str, key: tuple, data_root: str | None) -> dict[str, torch.Tensor]:
    """Clean and noisy training pool and test set, ``(N, window, window)`` float64 (cached per process)."""
    p = dict(key)
    window = p["window"]
    synthetic = base_spec(spec).startswith("synthetic")
    out: dict[str, torch.Tensor] = {}
    for split, want in (("train", p["pool_windows"]), ("test", p["test_windows"])):
        if synthetic:
            size = int(parse_spec(base_spec(spec))[1].get("size", DEFAULTS["size"]))
            per_image = (size // window) ** 2
            if per_image < 1:
                raise UsageError(f"synthetic images of size {size} are smaller than the window {window}")
            images = clean_images(spec, split, math.ceil(want / per_image), None)
        else:
            images = clean_images(spec, split, p["max_images"] or None, data_root)
        tiles = torch.cat([window_tiles(im, window) for im in images])
        rng = np.random.default_rng(split_seed(p["data_seed"], split))
        order = torch.from_numpy(rng.permutation(tiles.shape[0]))
        out[f"{split}_clean"] = tiles[order][:want].contiguous()
    if synthetic:  # scale to the pixel std of photographs; one constant per dataset, from its training pool
        scale = p["signal_std"] / float(out["train_clean"].std())
        out = {k: v * scale for k, v in out.items()}
    for split in ("train", "test"):
        gen = torch.Generator().manual_seed(split_seed(p["data_seed"], split) % 2**63)
        clean = out[f"{split}_clean"]
        noise = torch.randn(clean.shape, generator=gen, dtype=torch.float64)
        out[f"{split}_noisy"] = clean + (p["sigma"] / 255.0) * noise
    return out


def seed_subset(seed: int, n_train: int, block: int, pool_size: int) -> np.ndarray:
    """Indices of seed ``seed``'s training samples in the shuffled pool: ``[seed * block, seed * block + n_train)``.

    Different seeds get disjoint blocks; within a seed, smaller training sets are prefixes of larger ones.
    """
    if n_train > block:
        raise UsageError(f"n_train {n_train} exceeds the per-seed block {block}")
    start = seed * block
    if start + n_train > pool_size:
        raise UsageError(
            f"seed {seed} with n_train {n_train} needs {start + n_train} pool samples, the pool has {pool_size}; "
            "use fewer seeds, a smaller n_train or a larger pool_windows/max_images"
        )
    return np.arange(start, start + n_train)


def sweep_datasets(config: dict) -> list[dict]:
    """The eps sweep: one dataset per kappa of ``config["sweep"]`` (kappa = 0 is isotropic, larger kappa less
    symmetric beyond the family's own group)."""
    sw = config.get("sweep")
    if not sw:
        return []
    return [
        {
            "name": f"{sw['name']}-kappa{kappa:g}",
            "spec": f"{sw['spec']},kappa={kappa:g}",
            "symmetry": "so2" if kappa == 0 else sw["symmetry"],
            "kappa": float(kappa),
        }
        for kappa in sw["kappas"]
    ]


def _same_data(a: str, b: str) -> bool:
    """Whether two dataset specs name the same synthetic images (parameters completed by the defaults)."""
    if not (a.startswith("synthetic") and b.startswith("synthetic")):
        return a == b
    (fa, pa), (fb, pb) = parse_spec(a), parse_spec(b)
    return fa == fb and {**DEFAULTS, **pa} == {**DEFAULTS, **pb}


def sweep_aliases(config: dict) -> dict[str, tuple[str, float]]:
    """Sweep datasets that equal a main dataset whose linear cells already cover the sweep's models and sizes
    (``kfold4`` is ``kfold4-kappa16``): sweep name -> (main name, kappa). Their cells are not run twice."""
    lin, sw = config["linear"], config.get("sweep") or {}
    covered = set(sw.get("models", [])) <= set(lin["models"]) and set(sw.get("n_train", [])) <= set(lin["n_train"])
    out = {}
    for ds in sweep_datasets(config):
        same = [d["name"] for d in config["datasets"] if _same_data(d["spec"], ds["spec"])]
        if covered and same:
            out[ds["name"]] = (same[0], ds["kappa"])
    return out
