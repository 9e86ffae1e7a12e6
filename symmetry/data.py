"""Image datasets for symmetry measurement: embedded photos, folders, DIV2K, Rain100L, synthetic fields.

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
  from :func:`data_root`. A missing folder is made from ``ROOT/DIV2K_*_HR.zip`` when
  that archive is there; with ``download=True`` the official archive is fetched first
  (resumable through ``ROOT/DIV2K_*_HR.zip.part``, SHA-256 verified, extracted into a
  temporary folder beside the target and renamed into place). The archive is kept.
- ``rain100l``: the clean (``norain``) images of
  ``ROOT/rain100l/{train,test}/{rain,norain}/norain-K.png``; :func:`load_pairs` gives
  the (rainy, clean) pairs matched by ``K``. ``ROOT`` may also be ``rain100l/`` itself.
- ``synthetic:FAMILY[,key=value...]``: continuous synthetic fields
  (:func:`symmetry.synthetic.load_synthetic`).

Channel rule (every file loader): 8-bit images are divided by 255 and 16-bit ones by
65535 (16-bit colour PNGs are decoded here, since Pillow reduces them to 8 bits);
float TIFFs are kept as they are and must be finite. Palette images become RGB; an
alpha channel is dropped; CMYK/YCbCr JPEGs become RGB; an EXIF orientation tag is
applied; a multi-page TIFF gives its first page. ``channels="gray"`` gives the ITU-R
BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of an RGB image, or a gray image itself;
``channels="rgb"`` gives RGB, with gray replicated to 3 channels. Other channel counts
(anything but 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA) are refused. Images are
``(C, H, W)`` float64 tensors at native resolution; :meth:`ImageSource.at_mesh`
resamples them to mesh ``h`` (:func:`symmetry.transforms.to_mesh`).

Decompression bombs: no decoder allocates an image of more than :func:`pixel_limit` pixels
(width x height x depth, default :data:`MAX_IMAGE_PIXELS`, 100 megapixels): the size is read
from the header (PNG IHDR, TIFF tags, Pillow's ``Image.open``) and checked before any pixel
is decoded. Raise it per call (``read_image(..., max_pixels=N)``, ``load_dataset(...,
max_pixels=N)``) or for a whole process with ``$SYMMETRY_MAX_PIXELS`` (command lines pass
``--max-pixels`` there when they offer it).

Every problem is a :class:`~symmetry.errors.DataError` (or, for bad arguments, a
:class:`~symmetry.errors.UsageError`) with one line that names the path and the fix.
Unreadable images fail lazily, in :meth:`ImageSource.load`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import stat
import struct
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from symmetry.errors import DataError, UsageError
from symmetry.transforms import to_mesh, transform_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
CHANNELS = ("gray", "rgb")
LUMA_BT601 = (0.299, 0.587, 0.114)

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
MAX_IMAGE_PIXELS = 100_000_000
"""Default decoder limit in pixels (100 megapixels: a 10000 x 10000 image, 2.4 GB as float64 RGB)."""
MAX_PIXELS_ENV = "SYMMETRY_MAX_PIXELS"
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- sources and datasets


@dataclass(eq=False)
class ImageSource:
    """One image of a dataset: a file read lazily by the channel rule, or pixels held in ``array``."""

    name: str
    path: Path | None = None
    channels: str = "gray"
    array: torch.Tensor | None = field(default=None, repr=False)
    max_pixels: int | None = None  # decoder limit (None: :func:`pixel_limit`'s default)

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


# --------------------------------------------------------------------------- decoding


def pixel_limit(max_pixels: int | None = None) -> int:
    """The decoder limit in pixels: ``max_pixels`` if given, else ``$SYMMETRY_MAX_PIXELS``, else the default."""
    source = "max_pixels"
    if max_pixels is None:
        env = os.environ.get(MAX_PIXELS_ENV, "").strip()
        if not env:
            return MAX_IMAGE_PIXELS
        source, max_pixels = f"${MAX_PIXELS_ENV}", env
    try:
        value = int(str(max_pixels).replace("_", ""))
    except ValueError:
        value = 0
    if isinstance(max_pixels, (bool, float)) or value < 1:
        raise UsageError(f"{source} must be a positive whole number of pixels, e.g. 400000000, got {max_pixels!r}")
    return value


def _check_pixels(path: Path, width: int, height: int, limit: int, depth: int = 1) -> None:
    """Refuse an image whose header claims more than ``limit`` pixels, before anything is decoded."""
    count = int(width) * int(height) * int(depth)
    if width < 1 or height < 1 or depth < 1:
        raise DataError(f"{path}: the header claims an empty image ({width}x{height}); the file is corrupt")
    if count > limit:
        size = f"{width}x{height}" + (f"x{depth}" if depth != 1 else "")
        raise DataError(
            f"{path}: image of {size} = {count} pixels exceeds the limit of {limit} (a decompression bomb?); "
            f"if it is genuine, raise the limit with max_pixels= or ${MAX_PIXELS_ENV}"
        )


PNG16_MAX_SIDES = 40_000
"""Width + height above which a 16-bit colour PNG is left to Pillow (8-bit): :func:`_unfilter_png` takes w + h steps."""


def _png16_colour(path: Path, limit: int = MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """Decode a non-interlaced 16-bit gray+alpha/RGB/RGBA PNG to big-endian uint16 ``(H, W, C)``; else None.

    The IHDR size is checked against ``limit`` before the file is read, and the image data
    is inflated to at most the size the header promises (a zlib bomb cannot grow past it).
    """
    with open(path, "rb") as fh:
        head = fh.read(29)
    if len(head) < 29 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", head[16:29])
    if depth != 16 or colour not in (2, 4, 6):
        return None
    _check_pixels(path, w, h, limit)
    if interlace:
        warnings.warn(f"{path}: interlaced 16-bit colour PNG is read at 8-bit precision", stacklevel=3)
        return None
    if w + h > PNG16_MAX_SIDES:  # the row-filter sweep below takes w + h steps: a 1 x 2,000,000 image would hang
        warnings.warn(f"{path}: 16-bit colour PNG of {w}x{h} is read at 8-bit precision", stacklevel=3)
        return None
    data, pos, idat = path.read_bytes(), 8, []
    while True:
        if pos + 8 > len(data):
            raise DataError(f"{path}: truncated PNG (no IEND chunk); the file is incomplete")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if pos + 12 + length > len(data):
            raise DataError(f"{path}: truncated PNG ({kind.decode('latin-1')} chunk cut short)")
        if kind == b"IDAT":
            idat.append(data[pos + 8 : pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    channels = {2: 3, 4: 2, 6: 4}[colour]
    stride = 2 * channels * w
    raw = zlib.decompressobj().decompress(b"".join(idat), h * (stride + 1))
    if len(raw) < h * (stride + 1):
        raise DataError(f"{path}: truncated PNG image data ({len(raw)} of {h * (stride + 1)} bytes)")
    rows = np.frombuffer(raw, np.uint8, h * (stride + 1)).reshape(h, stride + 1)
    pixels = _unfilter_png(rows[:, 0], rows[:, 1:].reshape(h, w, 2 * channels))
    return pixels.view(">u2").reshape(h, w, channels)


def _unfilter_png(kinds: np.ndarray, filtered: np.ndarray) -> np.ndarray:
    """Undo PNG row filters on ``(H, W, bytes per pixel)`` uint8.

    Pixel ``(r, c)`` depends only on its left, upper and upper-left neighbours, so the
    image is reconstructed one anti-diagonal at a time (``H + W - 1`` vectorised steps).
    """
    if kinds.size and int(kinds.max()) > 4:
        raise ValueError(f"invalid PNG filter type {int(kinds.max())}")
    h, w, b = filtered.shape
    x = np.zeros((h + 1, w + 1, b), np.int32)  # one zero row and column of padding
    f = filtered.astype(np.int32)
    kinds = kinds.astype(np.int32)
    for d in range(h + w - 1):
        r = np.arange(max(0, d - w + 1), min(h, d + 1))
        c = d - r
        left, up, upleft = x[r + 1, c], x[r, c + 1], x[r, c]
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        k = kinds[r][:, None]
        pred = np.select([k == 1, k == 2, k == 3, k == 4], [left, up, (left + up) >> 1, paeth], 0)
        x[r + 1, c + 1] = (f[r, c] + pred) & 255
    return x[1:, 1:].astype(np.uint8)


def _read_tiff(path: Path, limit: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        _check_pixels(path, page.imagewidth, page.imagelength, limit, page.imagedepth)  # tags only, nothing decoded
        series = tif.series[0] if tif.series else page
        extra = [f"{a}={n}" for a, n in zip(series.axes, series.shape) if a not in "YXSC" and n > 1]
        if page.imagedepth > 1 or extra:  # a volume or a stack: which plane is "the image" is not ours to guess
            axes = ", ".join(extra) or f"Z={page.imagedepth}"
            raise DataError(
                f"{path}: a volumetric or multi-page TIFF ({series.axes} {tuple(series.shape)}, {axes}); "
                "save each 2-D image as its own file"
            )
        if page.samplesperpixel > 4:
            raise DataError(
                f"{path}: unsupported channel count ({page.samplesperpixel}); expected 1 gray, 2 gray+alpha, "
                "3 RGB or 4 RGBA"
            )
        arr = page.asarray()
        axes = page.axes
        if page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.colormap is not None:
            return np.moveaxis(np.asarray(page.colormap)[:, arr], 0, -1)
    if arr.ndim == 3 and axes[:1] in ("S", "C"):  # planar (separate) channels
        arr = np.moveaxis(arr, 0, -1)
    return arr


@contextlib.contextmanager
def _own_pixel_check():
    """Pillow's own bomb check off (its limit is not ours, and it is process-wide); :func:`_check_pixels` applies."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _read_pillow(path: Path, limit: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    from PIL import Image, ImageOps

    with _own_pixel_check(), Image.open(path) as im:
        _check_pixels(path, *im.size, limit)  # Image.open reads the header only
        im.load()
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: show the image the way it was taken
            im = ImageOps.exif_transpose(im)
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode in ("PA", "RGBa", "La"):
            im = im.convert("RGBA" if im.mode != "La" else "LA")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.asarray(im)
    if im.mode == "I":  # 32-bit integer gray: only 16-bit content is valid here
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(f"{path}: 32-bit integer pixels are not supported; save it as 8- or 16-bit")
        arr = arr.astype(np.uint16)
    return arr


def _scale(arr: np.ndarray, path: Path) -> np.ndarray:
    """Pixel values in [0, 1] by the channel rule (floats kept, must be finite)."""
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if kind == "b":
        return arr.astype(np.float64)
    if kind == "u" and size == 1:
        return arr / 255.0
    if kind == "u" and size == 2:
        return arr.astype(np.float64) / 65535.0
    if kind == "f":
        out = arr.astype(np.float64)
        if not np.isfinite(out).all():
            raise DataError(f"{path}: image has NaN or infinite pixels; fix or remove the file")
        return out
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}; use 8- or 16-bit unsigned integers or float")


def _to_channels(arr: np.ndarray, channels: str, path: Path) -> torch.Tensor:
    """``(H, W[, C])`` values -> ``(C, H, W)`` float64 tensor with alpha dropped, as gray luma or RGB."""
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        count = arr.shape[-1] if arr.ndim == 3 else f"shape {arr.shape}"
        raise DataError(f"{path}: unsupported channel count ({count}); expected 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA")
    if arr.shape[-1] in (2, 4):
        arr = arr[..., :-1]
    image = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arr, -1, 0)))
    if channels == "gray" and image.shape[0] == 3:
        luma = torch.tensor(LUMA_BT601, dtype=torch.float64)
        image = torch.tensordot(luma, image, dims=1)[None]
    elif channels == "rgb" and image.shape[0] == 1:
        image = image.expand(3, -1, -1).contiguous()
    return image


def _check_regular(path: Path) -> None:
    """Refuse a pipe, device or socket named like an image (reading a FIFO would wait forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # a missing file or a dangling link: the reader names it
    if not stat.S_ISREG(mode):
        raise DataError(f"{path} is not a regular file (a pipe, device or socket); move it out of the image folder")


def read_image(path: str | os.PathLike, channels: str = "gray", *, max_pixels: int | None = None) -> torch.Tensor:
    """Read one image file by the module's channel rule; any failure is a :class:`DataError` naming ``path``.

    An image of more than :func:`pixel_limit` ``(max_pixels)`` pixels is refused from its
    header, before anything is decoded (module docstring).
    """
    if channels not in CHANNELS:
        raise UsageError(f"channels must be one of {', '.join(CHANNELS)}, got {channels!r}")
    limit = pixel_limit(max_pixels)
    path = Path(path)
    _check_regular(path)
    try:
        suffix = path.suffix.lower()
        arr = None
        if suffix in (".tif", ".tiff"):
            arr = _read_tiff(path, limit)
        elif suffix == ".png":
            arr = _png16_colour(path, limit)
        if arr is None:
            arr = _read_pillow(path, limit)
    except DataError:
        raise
    except MemoryError:
        raise DataError(f"{path}: not enough memory to decode it; free memory or lower max_pixels") from None
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (it was moved or deleted after the dataset was listed)") from None
    except Exception as err:  # any decoder failure means a corrupt, truncated or unsupported file
        raise DataError(f"{path}: cannot read image, corrupt or truncated? ({type(err).__name__}: {err})") from None
    return _to_channels(_scale(arr, path), channels, path)


# --------------------------------------------------------------------------- local datasets


def data_root(data_root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: the explicit argument, else ``$SYMMETRY_DATA``, else ``~/.cache/symmetry``."""
    return _resolve_root(data_root)


def _resolve_root(root: str | os.PathLike | None) -> Path:
    chosen = root if root not in (None, "") else os.environ.get("SYMMETRY_DATA") or Path.home() / ".cache" / "symmetry"
    return Path(chosen).expanduser()


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
        _check_regular(path)
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
    base = _rain100l_split(_resolve_root(data_root), split)
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


# --------------------------------------------------------------------------- DIV2K: download, verify, extract


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _progress(total: int | None, completed: int, label: str):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = bar.add_task(label, total=total, completed=completed)
    return bar, lambda n: bar.advance(task, n)


def download_file(url: str, target: Path, sha256: str | None = None, *, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``target``: resumable (HTTP Range on ``target.part``), SHA-256 verified, renamed when whole.

    An interrupted transfer keeps ``target.part`` and raises :class:`DataError`; the next
    call resumes it. A checksum mismatch deletes the part and raises.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "symmetry-restoration", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    retry = f"rerun with --download to resume ({part} is kept), or place {target.name} in {target.parent}"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not have:  # 416: nothing left after `have` bytes, the part is whole
            raise DataError(f"download of {url} failed: HTTP {err.code} {err.reason}; {retry}") from None
        resp = None
    except (OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise DataError(
            f"cannot download {url} ({reason}); check the network, or place {target.name} in {target.parent}"
        ) from None
    if resp is not None:
        with resp:
            resumed = bool(have) and resp.status == 206
            if resumed:
                start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if start is None or int(start.group(1)) != have:
                    part.unlink()
                    raise DataError(f"{url}: the server resumed at the wrong offset; rerun with --download to restart")
            else:
                have = 0
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            received = have
            bar, advance = _progress(total, have, f"download {target.name}")
            try:
                with bar, open(part, "ab" if resumed else "wb") as out:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        advance(len(chunk))
            except (OSError, http.client.HTTPException) as err:
                raise DataError(f"download of {url} interrupted after {received} bytes ({err}); {retry}") from None
            if total is not None and received < total:
                raise DataError(f"download of {url} interrupted at {received} of {total} bytes; {retry}")
    if sha256:
        got = _sha256(part)
        if got != sha256.lower():
            part.unlink()
            raise DataError(
                f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); the download was deleted, rerun "
                "with --download, or override the checksum (symmetry.data.DIV2K_SHA256) for a different archive"
            )
    else:
        warnings.warn(f"{url}: no checksum known, the download is not verified", stacklevel=2)
    os.replace(part, target)
    return target


def _expected_sha256(archive: str, split: str) -> str | None:
    env = os.environ.get(f"SYMMETRY_DIV2K_SHA256_{'TRAIN' if split == 'train' else 'VALID'}")
    if env is not None:
        return None if env.strip().lower() in ("", "none") else env.strip()
    return DIV2K_SHA256.get(archive)


def _extract(archive: Path, root: Path, folder: str) -> Path:
    """Unzip ``archive`` into a temporary folder beside ``root/folder``, then rename ``folder`` into place."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder}.", suffix=".extracting", dir=root))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        src = tmp / folder
        if not src.is_dir():
            raise DataError(f"{archive} has no {folder}/ folder inside; is it the right archive? delete it and rerun")
        os.replace(src, root / folder)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
        raise DataError(f"{archive}: cannot extract ({err}); delete it and rerun with --download") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root / folder


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
            if sha and _sha256(archive) != sha.lower():
                raise DataError(f"{archive}: checksum mismatch with the official archive; delete it and rerun")
        elif download:
            download_file(url, archive, sha)
        else:
            raise DataError(
                f"DIV2K folder {target} is missing: rerun with --download to fetch {url}, or place the official "
                f"{folder}.zip (or its unzipped {folder}/) in {root}; --data-root or $SYMMETRY_DATA choose the root"
            )
        _extract(archive, root, folder)
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
    try:
        from symmetry.synthetic import FAMILIES
    except ImportError:
        FAMILIES = {"FAMILY": "synthetic continuous fields"}  # noqa: N806
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
        from symmetry.synthetic import load_synthetic

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
        return _div2k(_resolve_root(data_root), split, channels, download, max_pixels)
    if key == "rain100l":
        return _rain100l(_resolve_root(data_root), split, channels, max_pixels)
    hint = f" (for a folder of images use folder:{spec})" if Path(spec).expanduser().is_dir() else ""
    raise UsageError(
        f"unknown dataset {spec!r}{hint}; choose one of: skimage, folder:PATH, div2k, rain100l, "
        "synthetic:FAMILY[,key=value...] (see --list-datasets)"
    )


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
    from symmetry.groups import Group, get_group

    g = group if isinstance(group, Group) else get_group(group)
    if not all(e.is_grid_exact for e in g):
        raise UsageError(f"augmentation needs quarter turns and flips only (e.g. flip, rot4, dih4), got {g.name}")
    name = getattr(dataset, "name", "images")
    sources = [
        TransformedSource(f"{s.name}@{e.name}", getattr(s, "path", None), base=s, element=e) for s in dataset for e in g
    ]
    return Dataset(f"{name}+{g.name}", sources, f"{name} closed under {g.name} ({len(g)} copies of each image)")
