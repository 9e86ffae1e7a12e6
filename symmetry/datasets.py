"""Datasets by name: embedded photos, folders, DIV2K, Rain100L, synthetic fields.

The catalogue of named datasets; where data lives is :func:`symmetry.locations.data_root` (one rule).
Specs accepted by :func:`load_dataset` (``--dataset`` on the command line, ``--list-datasets``):

- ``skimage`` (default): natural photographs and textures shipped inside scikit-image's
  wheel, read straight from its data folder (never a download): astronaut, brick,
  camera, chelsea, coffee, coins, grass, gravel, hubble_deep_field,
  immunohistochemistry, moon, motorcycle (left view), rocket. All are at least 300 px
  on their short side; synthetic or tiny ones (chessboard, logo, phantom, horse,
  microaneurysms, ...) and near-duplicates (motorcycle right view) are left out.
- ``folder:PATH``: every PNG, JPEG and TIFF under ``PATH``, recursively, in sorted order
  of their relative paths (hidden files and folders are skipped).
- ``div2k``: ``ROOT/DIV2K_train_HR/*.png`` (split ``train``, 800 images) or
  ``ROOT/DIV2K_valid_HR/*.png`` (split ``valid`` or ``test``, 100 images), ``ROOT``
  from :func:`~symmetry.locations.data_root`. A missing folder is made from ``ROOT/DIV2K_*_HR.zip`` when
  that archive is there; with ``download=True`` the official archive is fetched first
  (:mod:`symmetry.download`: resumable through ``ROOT/DIV2K_*_HR.zip.part``, SHA-256 verified,
  extracted into a temporary folder beside the target and renamed into place). The archive is kept.
- ``rain100l``: the clean (``norain``) images of
  ``ROOT/rain100l/{train,test}/{rain,norain}/norain-K.png``; :func:`load_pairs` gives
  the (rainy, clean) pairs matched by ``K``. ``ROOT`` may also be ``rain100l/`` itself.
- ``synthetic:FAMILY[,key=value...]``: continuous synthetic fields
  (:func:`symmetry.synthetic.load_synthetic`).

Files are read by :func:`symmetry.decoders.read_image` (the channel rule and the decompression-bomb limit
are documented there); sources and datasets are :mod:`symmetry.sources`.

Every problem is a :class:`~symmetry.errors.DataError` (or, for bad arguments, a
:class:`~symmetry.errors.UsageError`) with one line that names the path and the fix.
Unreadable images fail lazily, in :meth:`symmetry.sources.ImageSource.load`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from symmetry.decoders import CHANNELS, IMAGE_EXTENSIONS, check_regular, pixel_limit
from symmetry.download import download_file, extract_folder, sha256_file
from symmetry.errors import DataError, UsageError
from symmetry.locations import data_root
from symmetry.sources import Dataset, ImageSource
from symmetry.synthetic import FAMILIES, load_synthetic

# name -> file in scikit-image's data folder (bundled in the wheel, so no pooch download)
SKIMAGE_IMAGES = {
    "astronaut": "astronaut.png",
    "brick": "brick.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "rocket": "rocket.jpg",
}

# Official DIV2K archives; the base URL can be overridden with $SYMMETRY_DIV2K_URL (e.g. a mirror or a test server).
DIV2K_URL = "http://data.vision.ee.ethz.ch/cvl/DIV2K"
DIV2K_FOLDERS = {"train": "DIV2K_train_HR", "valid": "DIV2K_valid_HR", "test": "DIV2K_valid_HR"}
# SHA-256 of the official archives. ETH does not publish checksums; these are the values in TensorFlow Datasets'
# url_checksums/div2k.txt (train 3,530,603,713 bytes, valid 448,993,893 bytes), whose MD5 counterparts
# (train bdc2d9338d4e574fe81bf7d158758658, valid 9fcdda83005c5e5997799b69f955ff88) are the ones torchSR and
# deepinv check. Override per archive here or with $SYMMETRY_DIV2K_SHA256_TRAIN / _VALID ("none" skips the check).
DIV2K_SHA256: dict[str, str | None] = {
    "DIV2K_train_HR.zip": "9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
    "DIV2K_valid_HR.zip": "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
}
RAIN100L_SPLITS = ("train", "test")
SPLITS = ("train", "valid", "test")


_data_root = data_root  # the loaders below take a parameter of the same name


# --------------------------------------------------------------------------- local datasets


def _image_files(root: Path) -> list[Path]:
    """Image files under ``root``, recursively, sorted by relative path; hidden entries skipped.

    A folder that cannot be listed is an error, not a silent gap in the dataset.
    """

    def unreadable(err: OSError) -> None:
        raise DataError(f"cannot list {err.filename} ({err.strerror}); fix its permissions, or move it out of {root}")

    found = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__MACOSX"]
        found += [
            Path(dirpath, f) for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
        ]
    for path in found:
        check_regular(path)
    return sorted(found, key=lambda p: p.relative_to(root).parts)


def _folder(root: Path, channels: str, name: str, what: str = "images", max_pixels: int | None = None) -> Dataset:
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist; check the path (folder:PATH takes a folder of images)")
    if not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; give the folder that holds the images")
    files = _image_files(root)
    if not files:
        raise DataError(f"no images found in {root} (searched recursively for {', '.join(IMAGE_EXTENSIONS)})")
    sources = [ImageSource(p.relative_to(root).as_posix(), p, channels, max_pixels=max_pixels) for p in files]
    return Dataset(name, sources, f"{len(files)} {what} under {root}")


def _skimage(channels: str, max_pixels: int | None = None) -> Dataset:
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    sources = [
        ImageSource(name, folder / f, channels, max_pixels=max_pixels)
        for name, f in SKIMAGE_IMAGES.items()
        if (folder / f).is_file()
    ]
    if not sources:
        raise DataError(f"scikit-image's sample images are missing from {folder}; reinstall scikit-image")
    return Dataset("skimage", sources, f"{len(sources)} photographs and textures bundled in scikit-image {folder}")


# --------------------------------------------------------------------------- Rain100L


def _rain100l_dir(root: Path) -> Path:
    for cand in (root / "rain100l", root / "Rain100L", root):
        if any((cand / s).is_dir() for s in RAIN100L_SPLITS):
            return cand
    raise DataError(
        f"Rain100L not found under {root}: expected {root}/rain100l/{{train,test}}/{{rain,norain}}/norain-K.png; "
        "give --data-root (or $SYMMETRY_DATA) as the folder that holds rain100l/"
    )


def _by_index(folder: Path) -> dict[int, Path]:
    """Images of ``folder`` keyed by the number ``K`` that ends their name (``norain-K.png``)."""
    if not folder.is_dir():
        raise DataError(f"Rain100L folder {folder} is missing; expected rain/ and norain/ in each split")
    out: dict[int, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        match = re.search(r"(\d+)$", path.stem)
        if match is None:
            raise DataError(f"{path}: cannot pair it, its name has no trailing number K (expected norain-K.png)")
        k = int(match.group(1))
        if k in out:
            raise DataError(f"{path} and {out[k]} have the same number {k}; keep one of them")
        out[k] = path
    if not out:
        raise DataError(f"no images found in {folder} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return dict(sorted(out.items()))


def _rain100l_split(root: Path, split: str) -> Path:
    if split not in RAIN100L_SPLITS:
        raise UsageError(f"Rain100L splits are {', '.join(RAIN100L_SPLITS)}, got {split!r}")
    return _rain100l_dir(root) / split


def load_pairs(
    spec: str = "rain100l",
    *,
    data_root=None,
    split: str = "train",
    channels: str = "rgb",
    max_pixels: int | None = None,
) -> list[tuple[ImageSource, ImageSource]]:
    """``(degraded, clean)`` pairs for deraining, matched by the number ``K`` in their names, sorted by ``K``."""
    if spec.lower() != "rain100l":
        raise UsageError(f"paired data is available for rain100l only, got {spec!r}")
    if channels not in CHANNELS:
        raise UsageError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    base = _rain100l_split(_data_root(data_root), split)
    rel = base.parent
    rain, clean = _by_index(base / "rain"), _by_index(base / "norain")
    unpaired = sorted(set(rain) ^ set(clean))
    if unpaired:
        k = unpaired[0]
        path = clean[k] if k in clean else rain[k]
        other = "rain" if k in clean else "norain"
        raise DataError(f"{path} has no pair in {base / other} ({len(unpaired)} unpaired images); restore or remove it")
    return [
        (
            ImageSource(rain[k].relative_to(rel).as_posix(), rain[k], channels, max_pixels=max_pixels),
            ImageSource(clean[k].relative_to(rel).as_posix(), clean[k], channels, max_pixels=max_pixels),
        )
        for k in clean
    ]


def _rain100l(root: Path, split: str, channels: str, max_pixels: int | None = None) -> Dataset:
    base = _rain100l_split(root, split)
    clean = _by_index(base / "norain")
    rel = base.parent
    sources = [ImageSource(p.relative_to(rel).as_posix(), p, channels, max_pixels=max_pixels) for p in clean.values()]
    return Dataset(f"rain100l-{split}", sources, f"{len(sources)} clean Rain100L images in {base / 'norain'}")


# --------------------------------------------------------------------------- DIV2K


def _expected_sha256(archive: str, split: str) -> str | None:
    env = os.environ.get(f"SYMMETRY_DIV2K_SHA256_{'TRAIN' if split == 'train' else 'VALID'}")
    if env is not None:
        return None if env.strip().lower() in ("", "none") else env.strip()
    return DIV2K_SHA256.get(archive)


def _div2k(root: Path, split: str, channels: str, download: bool, max_pixels: int | None = None) -> Dataset:
    if split not in DIV2K_FOLDERS:
        raise UsageError(f"DIV2K splits are {', '.join(DIV2K_FOLDERS)}, got {split!r}")
    folder = DIV2K_FOLDERS[split]
    target = root / folder
    if not target.is_dir():
        archive = root / f"{folder}.zip"
        url = f"{(os.environ.get('SYMMETRY_DIV2K_URL') or DIV2K_URL).rstrip('/')}/{folder}.zip"
        sha = _expected_sha256(archive.name, split)
        if archive.is_file():
            if sha and sha256_file(archive) != sha.lower():
                raise DataError(f"{archive}: checksum mismatch with the official archive; delete it and rerun")
        elif download:
            download_file(url, archive, sha)
        else:
            raise DataError(
                f"DIV2K folder {target} is missing: rerun with --download to fetch {url}, or place the official "
                f"{folder}.zip (or its unzipped {folder}/) in {root}; --data-root or $SYMMETRY_DATA choose the root"
            )
        extract_folder(archive, root, folder)
    return _folder(target, channels, f"div2k-{split}", f"DIV2K {split} images", max_pixels)


# --------------------------------------------------------------------------- entry points


def list_datasets() -> dict[str, str]:
    """Dataset specs and a one-line description of each (``--list-datasets``)."""
    out = {
        "skimage": "natural photographs and textures bundled in scikit-image (default, offline)",
        "folder:PATH": "every PNG/JPEG/TIFF under PATH, recursively (8/16-bit or float; gray, RGB, RGBA, palette)",
        "div2k": "DIV2K HR, 800 train / 100 valid 2K photos (DIV2K_*_HR under the data root; --download fetches)",
        "rain100l": "clean Rain100L photographs (rain100l/{train,test}/norain under the data root)",
    }
    out.update({f"synthetic:{k}": v for k, v in FAMILIES.items()})
    return out


def load_dataset(
    spec: str,
    *,
    data_root=None,
    download: bool = False,
    split: str = "train",
    channels: str = "gray",
    max_pixels: int | None = None,
) -> Dataset:
    """A dataset from its spec (module docstring, :func:`list_datasets`); files are read lazily.

    ``split`` is ``train``, ``valid`` or ``test``; datasets without splits (``skimage``,
    ``folder:PATH``) have ``train`` only. ``max_pixels`` raises or lowers the decoder limit
    (:func:`pixel_limit`).
    """
    if channels not in CHANNELS:
        raise UsageError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    if split not in SPLITS:
        raise UsageError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    pixel_limit(max_pixels)  # a bad limit is a usage error now, not at the first image
    if spec.startswith("synthetic"):
        return load_synthetic(spec, split=split)
    key = spec.lower()
    if (spec.startswith("folder:") or key == "skimage") and split != "train":
        raise UsageError(
            f"{spec} has no {split} split (all its images are the train split); omit the split, or hold out "
            "images yourself (analysis.tasks holds out every fourth)"
        )
    if spec.startswith("folder:"):
        path = spec.split(":", 1)[1]
        if not path:
            raise UsageError("folder: needs a path, e.g. --dataset folder:~/photos")
        return _folder(Path(path).expanduser(), channels, spec, max_pixels=max_pixels)
    if key == "skimage":
        return _skimage(channels, max_pixels)
    if key == "div2k":
        return _div2k(_data_root(data_root), split, channels, download, max_pixels)
    if key == "rain100l":
        return _rain100l(_data_root(data_root), split, channels, max_pixels)
    hint = f" (for a folder of images use folder:{spec})" if Path(spec).expanduser().is_dir() else ""
    raise UsageError(
        f"unknown dataset {spec!r}{hint}; choose one of: skimage, folder:PATH, div2k, rain100l, "
        "synthetic:FAMILY[,key=value...] (see --list-datasets)"
    )
