"""Image decoders: one image file to a ``(C, H, W)`` float64 tensor by the project's channel rule.

Channel rule (every file loader): 8-bit images are divided by 255 and 16-bit ones by
65535 (16-bit colour PNGs are decoded here, since Pillow reduces them to 8 bits);
float TIFFs are kept as they are and must be finite. Palette images become RGB; an
alpha channel is dropped; CMYK/YCbCr JPEGs become RGB; an EXIF orientation tag is
applied; a multi-page TIFF gives its first page. ``channels="gray"`` gives the ITU-R
BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` of an RGB image, or a gray image itself;
``channels="rgb"`` gives RGB, with gray replicated to 3 channels. Other channel counts
(anything but 1 gray, 2 gray+alpha, 3 RGB or 4 RGBA) are refused. Images are
``(C, H, W)`` float64 tensors at native resolution; :meth:`symmetry.sources.ImageSource.at_mesh`
resamples them to mesh ``h`` (:func:`symmetry.transforms.to_mesh`).

Decompression bombs: no decoder allocates an image of more than :func:`pixel_limit` pixels
(width x height x depth, default :data:`MAX_IMAGE_PIXELS`, 100 megapixels): the size is read
from the header (PNG IHDR, TIFF tags, Pillow's ``Image.open``) and checked before any pixel
is decoded. Raise it per call (``read_image(..., max_pixels=N)``, ``load_dataset(...,
max_pixels=N)``) or for a whole process with ``$SYMMETRY_MAX_PIXELS`` (command lines pass
``--max-pixels`` there when they offer it).

Every problem is a :class:`~symmetry.errors.DataError` (or, for bad arguments, a
:class:`~symmetry.errors.UsageError`) with one line that names the path and the fix.
"""

from __future__ import annotations

import contextlib
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch

from symmetry.errors import DataError, UsageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
CHANNELS = ("gray", "rgb")
LUMA_BT601 = (0.299, 0.587, 0.114)
MAX_IMAGE_PIXELS = 100_000_000
"""Default decoder limit in pixels (100 megapixels: a 10000 x 10000 image, 2.4 GB as float64 RGB)."""
MAX_PIXELS_ENV = "SYMMETRY_MAX_PIXELS"


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


def check_regular(path: Path) -> None:
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
    check_regular(path)
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
