"""Benchmark test sets (Set5, Set14, B100, Urban100, ...) read from the folder layouts they are distributed in.

Layouts (:func:`detect_layout`), for a set folder ``ROOT``:

- ``srf``: ``ROOT/image_SRF_{s}/*_HR.png`` with ``*_LR.png`` (the layout of Huang et al.'s SelfExSR release,
  e.g. ``img_001_SRF_2_HR.png`` / ``img_001_SRF_2_LR.png``); ``ROOT`` may also be one ``image_SRF_{s}`` folder;
- ``hr-lr``: ``ROOT/HR/*.png`` with optional ``ROOT/LR_bicubic/X{s}/{stem}x{s}.png`` (the EDSR/BasicSR layout);
- ``hr``: ``ROOT/*.png``, a plain folder of HR images.

HR images are cropped at the bottom/right to a multiple of the scale (MATLAB's ``modcrop``); LR images, when the
layout has none, are MATLAB's bicubic ``imresize(hr, 1/s)`` rounded to 8 bits (:func:`analysis.tasks.bicubic_lr`),
which is how these LR files were made. A given LR file must be exactly ``1/s`` of the cropped HR image.

:func:`rotated` turns every image (and its input) by the eight elements of ``dih4`` (quarter turns and flips,
exact pixel permutations via :func:`symmetry.transforms.transform_image`): the "rotated test sets".
"""

from __future__ import annotations

import re
from pathlib import Path

from analysis.tasks import Example, Item, _compact, bicubic_lr, check_augment_group, crop_to_multiple
from symmetry.decoders import IMAGE_EXTENSIONS, read_image
from symmetry.errors import DataError, UsageError
from symmetry.transforms import transform_image

LAYOUTS = ("srf", "hr-lr", "hr")
ROTATION_GROUP = "dih4"
_SRF = re.compile(r"^image_SRF_(\d+)$")


def _images(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS)


def _srf_dirs(root: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := _SRF.match(p.name))}


def detect_layout(root: str | Path) -> str:
    """The layout of a test-set folder (module docstring) or a :class:`DataError` saying what was found."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"test set folder {root} does not exist; pass the folder holding the set's images")
    if _srf_dirs(root) or _SRF.match(root.name):
        return "srf"
    if (root / "HR").is_dir():
        return "hr-lr"
    if _images(root):
        return "hr"
    raise DataError(
        f"unknown test set layout in {root}: expected image_SRF_<s>/ folders, an HR/ folder, or image files"
    )


def _stem_key(name: str, suffix: str) -> str | None:
    stem = Path(name).stem
    return stem[: -len(suffix)] if stem.endswith(suffix) else None


def _srf_pairs(root: Path, scale: int) -> list[tuple[str, Path, Path | None]]:
    if _SRF.match(root.name):
        folder, found = root, int(_SRF.match(root.name).group(1))
        if scale != 1 and found != scale:
            raise DataError(f"{root} holds scale {found}, not {scale}; pass --scale {found} or the x{scale} folder")
    else:
        dirs = _srf_dirs(root)
        if scale == 1:  # denoising: the HR images of the smallest scale
            folder = dirs[min(dirs)]
        elif scale not in dirs:
            have = ", ".join(f"x{s}" for s in sorted(dirs))
            raise DataError(f"{root} has no image_SRF_{scale} folder (it has {have}); choose one of those scales")
        else:
            folder = dirs[scale]
    files = _images(folder)
    hr = {k: p for p in files if (k := _stem_key(p.name, "_HR")) is not None}
    lr = {k: p for p in files if (k := _stem_key(p.name, "_LR")) is not None}
    if not hr:
        raise DataError(f"{folder} has no *_HR images")
    if scale != 1:
        missing = sorted(set(hr) ^ set(lr))
        if missing:
            raise DataError(
                f"{folder}: {len(missing)} image(s) without an HR/LR partner, e.g. {missing[0]}; "
                "every *_HR file needs its *_LR file"
            )
    return [(k, hr[k], lr.get(k) if scale != 1 else None) for k in sorted(hr)]


def _hr_lr_pairs(root: Path, scale: int) -> list[tuple[str, Path, Path | None]]:
    hr = _images(root / "HR")
    if not hr:
        raise DataError(f"{root / 'HR'} has no images")
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    if scale == 1 or not lr_dir.is_dir():
        return [(p.stem, p, None) for p in hr]
    lr = {p.stem: p for p in _images(lr_dir)}
    out, missing = [], []
    for p in hr:
        q = lr.get(f"{p.stem}x{scale}") or lr.get(p.stem)
        if q is None:
            missing.append(p.name)
        out.append((p.stem, p, q))
    extra = len(lr) - (len(hr) - len(missing))
    if missing or extra:
        what = f"e.g. no LR for {missing[0]}" if missing else f"{extra} LR file(s) without an HR image"
        raise DataError(f"{lr_dir}: HR/LR pairs do not match ({what}); LR files must be named <hr stem>x{scale}.png")
    return out


def testset_pairs(root: str | Path, scale: int = 1) -> list[tuple[str, Path, Path | None]]:
    """``(name, hr_path, lr_path or None)`` of every image of the set at ``scale`` (1: HR only), sorted by name."""
    if scale < 1:
        raise UsageError(f"scale must be >= 1, got {scale}")
    root = Path(root)
    layout = detect_layout(root)
    if layout == "srf":
        return _srf_pairs(root, scale)
    if layout == "hr-lr":
        return _hr_lr_pairs(root, scale)
    return [(p.stem, p, None) for p in _images(root)]


def load_testset(
    root: str | Path,
    *,
    scale: int = 1,
    channels: str = "rgb",
    max_images: int | None = None,
) -> list[Item]:
    """The images of a test set as :class:`analysis.tasks.Item` (targets modcropped; SR inputs the LR images).

    ``scale`` 1 loads HR images only (denoising); ``scale`` >= 2 gives each item its LR input, read from the
    layout or made by MATLAB bicubic. A given LR file of the wrong size is a :class:`DataError`.
    """
    ch = "rgb" if channels == "rgb" else "gray"
    items = []
    for name, hr_path, lr_path in testset_pairs(root, scale)[:max_images]:
        hr = read_image(hr_path, ch)
        if scale == 1:
            items.append(Item(name, _compact(hr.float())))
            continue
        hr = crop_to_multiple(hr, scale)
        if lr_path is None:
            lr = bicubic_lr(hr, scale)
        else:
            lr = read_image(lr_path, ch)
            want = (hr.shape[-2] // scale, hr.shape[-1] // scale)
            if tuple(lr.shape[-2:]) != want:
                raise DataError(
                    f"{lr_path} is {lr.shape[-2]}x{lr.shape[-1]} but its HR image cropped to a multiple of {scale} "
                    f"is {hr.shape[-2]}x{hr.shape[-1]} (LR {want[0]}x{want[1]}); is the scale {scale} right?"
                )
        items.append(Item(name, _compact(hr.float()), _compact(lr.float())))
    if not items:
        raise DataError(f"test set {root} has no images")
    return items


def rotated(examples: list[Example], group: str = ROTATION_GROUP) -> list[Example]:
    """Every example turned by every element of ``group`` (quarter turns and flips; exact), named ``name@element``.

    Input and target are transformed together, so a denoising input keeps its (fixed) noise, turned.
    """

    return [_turned(ex, g) for ex in examples for g in check_augment_group(group)]


def _turned(ex: Example, element) -> Example:
    """``ex`` with input and target transformed by ``element`` (an exact permutation), named ``name@element``."""
    return Example(
        f"{ex.name}@{element.name}",
        transform_image(ex.input, element)[0].contiguous(),
        transform_image(ex.target, element)[0].contiguous(),
        ex.eight_bit,
    )


def rotated_cycle(examples: list[Example], group: str = ROTATION_GROUP) -> list[Example]:
    """Example ``i`` turned by the non-identity element number ``i mod (|G| - 1)`` of ``group``, named ``name@element``.

    A rotated test set of the same size as the original (one copy per image instead of :func:`rotated`'s ``|G|``),
    cycling through the quarter turns and flips; input and target are transformed together (exact permutations).
    """

    elements = [g for g in check_augment_group(group) if not g.is_identity]
    return [_turned(ex, elements[i % len(elements)]) for i, ex in enumerate(examples)]


__all__ = [
    "LAYOUTS",
    "ROTATION_GROUP",
    "detect_layout",
    "testset_pairs",
    "load_testset",
    "rotated",
    "rotated_cycle",
]
