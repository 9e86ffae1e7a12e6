"""Datasets of images for symmetry measurement: embedded, folders, DIV2K, Rain100L and synthetic.

Channel rule (every loader): 8-bit images are divided by 255, 16-bit by 65535, float
TIFFs are kept as they are (they must be finite); palette images become RGB; an alpha
channel is dropped. ``channels="gray"`` gives ITU-R BT.601 luma
(0.299 R + 0.587 G + 0.114 B) of RGB images, or the gray image itself;
``channels="rgb"`` gives RGB, with gray images replicated to 3 channels. Images are
``(C, H, W)`` float64 tensors in native resolution; :meth:`ImageSource.at_mesh`
resamples them to mesh ``h`` (:func:`symmetry.transforms.to_mesh`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from symmetry.errors import DataError, UsageError
from symmetry.transforms import to_mesh, transform_image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
LUMA = (0.299, 0.587, 0.114)
# Natural photographs and textures shipped inside scikit-image's wheel (no download).
SKIMAGE_IMAGES = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "coffee",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "rocket",
    "coins",
)
DIV2K_URL = os.environ.get("SYMMETRY_DIV2K_URL", "http://data.vision.ee.ethz.ch/cvl/DIV2K")
DIV2K_FOLDERS = {"train": "DIV2K_train_HR", "valid": "DIV2K_valid_HR", "test": "DIV2K_valid_HR"}
# SHA-256 of the official archives, checked after download. The values are not known to this project
# (they could not be looked up offline); fill them in, or set SYMMETRY_DIV2K_SHA256_<SPLIT>, to enforce them.
DIV2K_SHA256: dict[str, str | None] = {"DIV2K_train_HR": None, "DIV2K_valid_HR": None}


@dataclass
class ImageSource:
    """One image on disk or in memory; loads lazily."""

    name: str
    path: Path | None = None
    channels: str = "gray"
    array: torch.Tensor | None = field(default=None, repr=False)

    def load(self) -> torch.Tensor:
        if self.array is not None:
            return self.array
        return read_image(self.path, self.channels)

    def at_mesh(self, mesh: float) -> torch.Tensor:
        return to_mesh(self.load(), mesh)


@dataclass
class Dataset:
    """A named sequence of image sources."""

    name: str
    sources: list
    description: str = ""

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i):
        return self.sources[i]

    def __iter__(self):
        return iter(self.sources)


def _to_channels(arr: np.ndarray, channels: str, path) -> torch.Tensor:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise DataError(f"{path}: unsupported image shape {arr.shape}; expected gray, RGB or RGBA")
    if arr.shape[-1] in (2, 4):  # drop alpha
        arr = arr[..., :-1]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).to(torch.float64)
    if channels == "gray" and t.shape[0] == 3:
        t = (torch.tensor(LUMA, dtype=torch.float64)[:, None, None] * t).sum(0, keepdim=True)
    elif channels == "rgb" and t.shape[0] == 1:
        t = t.expand(3, -1, -1).clone()
    return t


def _scale(arr: np.ndarray, path) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr / 255.0
    if arr.dtype == np.uint16:
        return arr / 65535.0
    if arr.dtype == bool:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError(f"{path}: image has NaN or infinite pixels")
        return arr.astype(np.float64)
    raise DataError(f"{path}: unsupported pixel type {arr.dtype}; use 8/16-bit integers or float")


def read_image(path, channels: str = "gray") -> torch.Tensor:
    """Read one image file by the module's channel rule; unreadable files raise :class:`DataError`."""
    if channels not in ("gray", "rgb"):
        raise UsageError(f"channels must be gray or rgb, got {channels!r}")
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                if im.mode == "P" or im.mode == "PA":
                    im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
                elif im.mode in ("I;16", "I;16B", "I;16L"):
                    arr = np.array(im, dtype=np.uint16)
                    im = None
                elif im.mode == "I":
                    arr = np.array(im).astype(np.uint16)
                    im = None
                if im is not None:
                    arr = np.array(im)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - any decoder failure means a corrupt or unsupported file
        raise DataError(f"{path}: cannot read image ({type(err).__name__}: {err})") from None
    return _to_channels(_scale(arr, path), channels, path)


def _folder(root: Path, channels: str, name: str) -> Dataset:
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist; check the path")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images found in {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    sources = [ImageSource(str(p.relative_to(root)), p, channels) for p in files]
    return Dataset(name, sources, f"{len(files)} images under {root}")


def _skimage(channels: str) -> Dataset:
    import skimage.data

    sources = []
    for key in SKIMAGE_IMAGES:
        loader = getattr(skimage.data, key, None)
        if loader is None:
            continue
        try:
            arr = np.asarray(loader())
        except Exception:  # noqa: BLE001 - an image that would need a download is left out
            continue
        sources.append(ImageSource(key, None, channels, _to_channels(_scale(arr, key), channels, key)))
    return Dataset("skimage", sources, "photographs and textures bundled in scikit-image (no download)")


def data_root(root=None) -> Path:
    """The explicit root, else ``$SYMMETRY_DATA``, else ``~/.cache/symmetry``."""
    return Path(root or os.environ.get("SYMMETRY_DATA") or Path.home() / ".cache" / "symmetry").expanduser()


def _rain100l_dir(root: Path) -> Path:
    for cand in (root / "rain100l", root):
        if (cand / "train").is_dir() or (cand / "test").is_dir():
            return cand
    raise DataError(f"no Rain100L under {root}: expected {root}/rain100l/{{train,test}}/{{rain,norain}}/norain-K.png")


def load_pairs(spec: str = "rain100l", *, data_root=None, split="train", channels="rgb") -> list[tuple]:
    """(rainy, clean) image pairs of Rain100L, matched by file name."""
    if spec != "rain100l":
        raise UsageError(f"paired data is available for rain100l only, got {spec!r}")
    base = _rain100l_dir(globals()["data_root"](data_root)) / split
    rain, clean = base / "rain", base / "norain"
    if not rain.is_dir() or not clean.is_dir():
        raise DataError(f"Rain100L split {split!r} needs {rain} and {clean}")
    pairs = []
    for c in sorted(clean.glob("*.png")):
        r = rain / c.name
        if not r.exists():
            raise DataError(f"{r} is missing: every clean image needs its rainy pair")
        pairs.append((ImageSource(f"rain/{c.name}", r, channels), ImageSource(f"norain/{c.name}", c, channels)))
    if not pairs:
        raise DataError(f"no images in {clean}")
    return pairs


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, target: Path, sha256: str | None = None, progress: bool = True) -> Path:
    """Download ``url`` to ``target``: resumable (HTTP Range on ``target.part``), verified, atomic."""
    part = target.with_name(target.name + ".part")
    target.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            mode = "ab" if have and resp.status == 206 else "wb"
            total = int(resp.headers.get("Content-Length") or 0) + (have if mode == "ab" else 0)
            bar = None
            if progress:
                from rich.progress import Progress

                bar = Progress(transient=True)
                bar.start()
                task = bar.add_task(
                    f"download {target.name}", total=total or None, completed=have if mode == "ab" else 0
                )
            with open(part, mode) as out:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    if bar:
                        bar.advance(task, len(chunk))
            if bar:
                bar.stop()
    except OSError as err:
        raise DataError(f"download of {url} failed ({err}); rerun to resume, or place the file at {target}") from None
    if sha256 is not None:
        got = _sha256(part)
        if got != sha256:
            part.unlink()
            raise DataError(f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); the file was removed")
    os.replace(part, target)
    return target


def extract(archive: Path, dest: Path) -> None:
    """Unzip into a temporary folder beside ``dest``, then move the contents into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        for item in tmp.iterdir():
            final = dest / item.name
            if not final.exists():
                os.replace(item, final)
    except zipfile.BadZipFile:
        raise DataError(f"{archive} is not a valid zip archive; delete it and download again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _div2k(root: Path, split: str, channels: str, fetch: bool) -> Dataset:
    if split not in DIV2K_FOLDERS:
        raise UsageError(f"DIV2K splits are {', '.join(DIV2K_FOLDERS)}, got {split!r}")
    folder = DIV2K_FOLDERS[split]
    if not (root / folder).is_dir() and fetch:
        archive = root / f"{folder}.zip"
        if not archive.exists():
            sha = os.environ.get(f"SYMMETRY_DIV2K_SHA256_{split.upper()}") or DIV2K_SHA256.get(folder)
            download(f"{DIV2K_URL}/{folder}.zip", archive, sha)
        extract(archive, root)
    if not (root / folder).is_dir():
        raise DataError(
            f"DIV2K folder {root / folder} is missing; rerun with --download, or unzip {folder}.zip from the "
            f"official DIV2K site into {root} (or set --data-root / $SYMMETRY_DATA)"
        )
    return _folder(root / folder, channels, f"div2k-{split}")


def list_datasets() -> dict[str, str]:
    """Dataset specs and what they are."""
    from symmetry.synthetic import FAMILIES

    out = {
        "skimage": "photographs and textures bundled in scikit-image (default, no download)",
        "folder:PATH": "every PNG/JPEG/TIFF under PATH (8/16-bit, gray/RGB/RGBA)",
        "div2k": "DIV2K HR (DIV2K_train_HR / DIV2K_valid_HR under --data-root; --download fetches them)",
        "rain100l": "clean Rain100L photographs (rain100l/{train,test}/norain under --data-root)",
    }
    out.update({f"synthetic:{k}": v for k, v in FAMILIES.items()})
    return out


def load_dataset(spec: str, *, data_root=None, download=False, split="train", channels="gray") -> Dataset:
    """A dataset from its spec (see :func:`list_datasets`)."""
    root = globals()["data_root"](data_root)
    if spec.startswith("synthetic"):
        from symmetry.synthetic import load_synthetic

        return load_synthetic(spec, split=split)
    if channels not in ("gray", "rgb"):
        raise UsageError(f"channels must be gray or rgb, got {channels!r}")
    if spec == "skimage":
        return _skimage(channels)
    if spec.startswith("folder:"):
        path = Path(spec.split(":", 1)[1]).expanduser()
        return _folder(path, channels, spec)
    if spec == "div2k":
        return _div2k(root, split, channels, download)
    if spec == "rain100l":
        base = _rain100l_dir(root) / split / "norain"
        return _folder(base, channels, "rain100l")
    raise UsageError(f"unknown dataset {spec!r}; choose one of: {', '.join(list_datasets())}")


@dataclass
class _Transformed:
    source: object
    element: object
    name: str

    def load(self) -> torch.Tensor:
        return transform_image(self.source.load(), self.element)[0]

    def at_mesh(self, mesh: float) -> torch.Tensor:
        return to_mesh(self.load(), mesh)


def augment(dataset: Dataset, group: str) -> Dataset:
    """Every image transformed by every element of a grid-exact group: the result is closed under it."""
    from symmetry.groups import UnknownGroupError, get_group

    try:
        g = get_group(group)
    except UnknownGroupError as err:
        raise UsageError(str(err)) from None
    if not all(e.is_grid_exact for e in g):
        raise UsageError(f"augmentation needs quarter turns and flips only (e.g. flip, rot4, dih4), got {g.name}")
    sources = [_Transformed(s, e, f"{s.name}@{e.name}") for s in dataset for e in g]
    return Dataset(f"{dataset.name}+{g.name}", sources, f"{dataset.name} closed under {g.name}")
