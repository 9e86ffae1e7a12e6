"""Model-agnostic equivariance error of an image-to-image network (theory.md, sections 1-2).

For every element ``A`` of a group, the relative error

    e_A = mean over images of  ||f(pi~_A x) - pi~_A f(x)||^2 / ||pi~_A f(x)||^2

measured on a centred disk (the disk inscribed in the image minus ``margin`` pixels,
scaled with the output for super-resolution models) and on the pixels that
:func:`symmetry.transforms.transform_image` marks valid. By Lemma 3.2 the denominator
is ``||f(x)||^2`` on the disk (exactly so for quarter turns and flips). Images are first
brought to mesh ``h`` with :func:`symmetry.transforms.to_mesh`, so the error can be
followed as a function of ``h`` (Theorem 3.6 predicts ``a h^2 + b eps``).

Normalisations (column ``normalisation``), each the error of one map relative to that map:

- ``"output"``: the whole network ``f``, as above.
- ``"learned"``: the learned part ``g = f - skip``, where ``skip`` is the fixed map a residual
  restoration network adds its output to (identity for denoising, bicubic upsampling for SR;
  :meth:`analysis.models.Backbone.skip`):
  ``||g(pi~_A x) - pi~_A g(x)||^2 / ||pi~_A g(x)||^2``. For such nets the skip dominates ``||f(x)||``,
  so the output normalisation reads small (a plain denoiser ~5e-4) even when the learned part is
  far from equivariant; the learned normalisation measures the network itself, and an equivariant
  ``g`` reads ~0 whatever the skip does.
- ``"skip"``: the fixed skip alone, ``||skip(pi~_A x) - pi~_A skip(x)||^2 / ||pi~_A skip(x)||^2``
  (bicubic upsampling is not exactly equivariant to 45-degree turns: its own error is this row).

``normalisation="both"`` reports ``output`` and ``learned``; ``"all"`` adds ``skip``; one row each.

Works for any ``torch.nn.Module`` mapping ``(B, C, H, W)`` to ``(B, C', sH, sW)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from symmetry.errors import DataError, UsageError
from symmetry.groups import Group, get_group
from symmetry.transforms import INTERPOLATIONS, SUPPORT_MARGIN, disk_mask, to_mesh, transform_image

DEFAULT_MARGIN = SUPPORT_MARGIN
"""Default pixels (of the input mesh) cut from the inscribed disk's radius, per interpolation:
the taps of a rotated image need this much room. For non-grid elements the rotated image's
zero corners reach the disk's edge, so outputs within a model's receptive field of the
edge are affected too; pass a larger ``margin`` to exclude them."""

COLUMNS = ["element", "angle", "is_grid_exact", "normalisation", "equivariance_error", "n_images"]
NORMALISATIONS = ("output", "learned", "skip")
"""``output``: the error of ``f``; ``learned``: of ``g = f - skip``; ``skip``: of the skip alone (each relative
to the map it measures)."""
GROUPS_OF_NORMALISATIONS = {"both": ("output", "learned"), "all": NORMALISATIONS}


def _as_image_list(images: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.dim() == 3:
            return [images]
        if images.dim() == 4:
            return list(images.unbind(0))
        raise DataError(f"images must be (C, H, W) or (N, C, H, W), got shape {tuple(images.shape)}")
    out: list[torch.Tensor] = []
    for item in images:
        out.extend(_as_image_list(torch.as_tensor(item)))
    if not out:
        raise DataError("no images given")
    return out


def _model_device_dtype(model: nn.Module, device) -> tuple[torch.device, torch.dtype | None]:
    tensors = list(model.parameters()) + list(model.buffers())
    floats = [t for t in tensors if t.is_floating_point()]
    dtype = floats[0].dtype if floats else None
    if device is None:
        device = tensors[0].device if tensors else torch.device("cpu")
    return torch.device(device), dtype


def _batches(images: list[torch.Tensor], batch_size: int) -> Iterable[torch.Tensor]:
    """Consecutive images of one shape stacked into batches of at most ``batch_size``."""
    batch: list[torch.Tensor] = []
    for img in images:
        if batch and (img.shape != batch[0].shape or len(batch) == batch_size):
            yield torch.stack(batch)
            batch = []
        batch.append(img)
    if batch:
        yield torch.stack(batch)


def _region(
    out_shape: tuple[int, int], in_shape: tuple[int, int], scale: float, margin: float, disk: bool, device
) -> torch.Tensor:
    """Where outputs are compared: the centred disk of radius ``scale * (min(H, W) / 2 - margin)``."""
    h, w = out_shape
    if not disk:
        return torch.ones(h, w, dtype=torch.bool, device=device)
    radius = scale * (min(in_shape) / 2 - margin)
    if radius <= 0:
        raise DataError(f"images of size {in_shape} leave no disk after a margin of {margin} pixels")
    return disk_mask(h, w, radius, device)


def _upsample_mask(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == tuple(shape):
        return mask
    return F.interpolate(mask[None, None].float(), size=shape, mode="nearest")[0, 0] > 0.5


def equivariance_error(
    model: nn.Module,
    images: torch.Tensor | Iterable[torch.Tensor],
    group: str | Group,
    *,
    mesh: float = 1.0,
    interpolation: str = "bicubic",
    disk: bool = True,
    batch_size: int = 8,
    device=None,
    margin: float | None = None,
    normalisation: str = "output",
    skip: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Relative equivariance error of ``model`` per element of ``group``; one row per element and normalisation.

    ``images``: a ``(C, H, W)`` or ``(N, C, H, W)`` tensor, or an iterable of such tensors
    (sizes may differ; images of the same size are batched). Each image is brought to
    mesh ``mesh`` first. ``margin`` (input pixels, default :data:`DEFAULT_MARGIN` of the
    interpolation) shrinks the comparison disk. ``normalisation``: ``"output"``, ``"learned"``,
    ``"skip"``, ``"both"`` (output and learned) or ``"all"`` (see the module docstring); ``learned``
    and ``skip`` use ``skip`` or else ``model.skip``.
    Returns a DataFrame with columns :data:`COLUMNS`; see
    :func:`summarize` for the worst and mean over non-identity elements. The model is
    evaluated in eval mode under ``torch.no_grad()`` (its training flag is restored).
    """
    if interpolation not in INTERPOLATIONS:
        raise UsageError(f"unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    if normalisation not in (*NORMALISATIONS, *GROUPS_OF_NORMALISATIONS):
        raise UsageError(f"unknown normalisation {normalisation!r}; choose output, learned, skip, both or all")
    norms = list(GROUPS_OF_NORMALISATIONS.get(normalisation, (normalisation,)))
    needs_skip = "learned" in norms or "skip" in norms
    if needs_skip:
        skip = skip or getattr(model, "skip", None)
        if not callable(skip):
            raise UsageError(
                f"the {normalisation!r} normalisation needs the model's skip(x); pass skip=... or use output"
            )
    g = get_group(group) if isinstance(group, str) else group
    margin = float(DEFAULT_MARGIN[interpolation] if margin is None else margin)
    if margin < 0:
        raise UsageError(f"margin must be >= 0, got {margin}")
    dev, dtype = _model_device_dtype(model, device)
    imgs = [to_mesh(img.to(dev, dtype or img.dtype), mesh) for img in _as_image_list(images)]

    sums = torch.zeros(len(norms), len(g), dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x in _batches(imgs, batch_size):
                in_shape = tuple(x.shape[-2:])
                y = model(x)
                s_x = skip(x) if needs_skip else None
                scale = y.shape[-1] / x.shape[-1]
                for idx, element in enumerate(g):
                    x_t, mask_in = transform_image(x, element, interpolation)
                    y_t = model(x_t)
                    s_t = skip(x_t) if needs_skip else None
                    maps = {  # name -> (h(pi x), h(x)) for the map h the row measures
                        "output": (y_t, y),
                        "learned": (y_t - s_t, y - s_x) if needs_skip else None,
                        "skip": (s_t, s_x) if needs_skip else None,
                    }
                    region = None
                    for n, name in enumerate(norms):
                        h_t, h_x = maps[name]
                        ref, mask_out = transform_image(h_x, element, interpolation)
                        if h_t.shape != ref.shape:
                            raise DataError(
                                f"model output shapes disagree: f(pi x) {tuple(h_t.shape)} "
                                f"vs pi f(x) {tuple(ref.shape)}"
                            )
                        if region is None:
                            out_hw = tuple(ref.shape[-2:])
                            region = _region(out_hw, in_shape, scale, margin, disk, dev)
                            region = region & mask_out & _upsample_mask(mask_in, out_hw)
                        num = ((h_t - ref).double().square() * region).flatten(1).sum(1)
                        den = (ref.double().square() * region).flatten(1).sum(1)
                        if (den <= 0).any():
                            what = {"output": "model output", "learned": "learned part f(x) - skip(x)"}.get(name, name)
                            raise DataError(f"the {what} is zero on the comparison disk; relative error undefined")
                        sums[n, idx] += (num / den).sum().cpu()
    finally:
        model.train(was_training)

    n = len(imgs)
    rows = [
        {
            "element": el.name,
            "angle": el.angle,
            "is_grid_exact": el.is_grid_exact,
            "normalisation": name,
            "equivariance_error": float(sums[k, i]) / n,
            "n_images": n,
        }
        for k, name in enumerate(norms)
        for i, el in enumerate(g)
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def summarize(df: pd.DataFrame, normalisation: str = "output") -> dict[str, float | str]:
    """Worst and mean equivariance error over the non-identity elements (theory.md, section 4 convention).

    Only rows of ``normalisation`` count (all rows of a frame without that column).
    Returns ``{"worst": ..., "mean": ..., "worst_element": ..., "grid_exact_worst": ..., "normalisation": ...}``
    (``grid_exact_worst`` is NaN when no non-identity element is a quarter turn or flip).
    """
    if "normalisation" in df.columns:
        df = df[df["normalisation"] == normalisation]
    rest = df[df["element"] != "e"]
    if rest.empty:
        return {
            "worst": 0.0,
            "mean": 0.0,
            "worst_element": "e",
            "grid_exact_worst": math.nan,
            "normalisation": normalisation,
        }
    worst_row = rest.loc[rest["equivariance_error"].idxmax()]
    exact = rest[rest["is_grid_exact"]]
    return {
        "worst": float(worst_row["equivariance_error"]),
        "mean": float(rest["equivariance_error"].mean()),
        "worst_element": str(worst_row["element"]),
        "grid_exact_worst": float(exact["equivariance_error"].max()) if not exact.empty else math.nan,
        "normalisation": normalisation,
    }


__all__ = ["equivariance_error", "summarize", "disk_mask", "DEFAULT_MARGIN", "COLUMNS", "NORMALISATIONS"]
