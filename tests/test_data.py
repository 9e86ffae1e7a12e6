"""Loaders: the channel rule, errors that name the path, Rain100L pairs, DIV2K layout and download, augmentation."""

import hashlib
import http.server
import io
import os
import socket
import struct
import threading
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from symmetry import datasets, decoders, locations, sources
from symmetry.errors import DataError, UsageError
from symmetry.groups import get_group
from symmetry.transforms import to_mesh, transform_image

tifffile = pytest.importorskip("tifffile")
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# --------------------------------------------------------------------------- helpers


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png16(arr: np.ndarray, filters=(0, 1, 2, 3, 4)) -> bytes:
    """A 16-bit PNG of ``(H, W, C)`` uint16 (C = 2, 3 or 4), row ``r`` filtered with ``filters[r % len]``."""
    h, w, ch = arr.shape
    bpp = 2 * ch
    x = arr.astype(">u2").view(np.uint8).reshape(h, w * bpp).astype(np.int64)
    zero = np.zeros(w * bpp, np.int64)
    rows = []
    for r in range(h):
        cur, up = x[r], x[r - 1] if r else zero
        left = np.concatenate([np.zeros(bpp, np.int64), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), up[:-bpp]])
        kind = filters[r % len(filters)]
        pred = [0 * cur, left, up, (left + up) // 2, _paeth(left, up, upleft)][kind]
        rows.append(bytes([kind]) + ((cur - pred) & 255).astype(np.uint8).tobytes())

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    colour = {2: 4, 3: 2, 4: 6}[ch]
    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def save(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(arr, mode) if mode else Image.fromarray(arr)).save(path)
    return path


# --------------------------------------------------------------------------- channel rule


def test_8_and_16_bit_png_and_16_bit_tiff_agree(tmp_path):
    v8 = np.array([[0, 51, 255], [3, 128, 200]], dtype=np.uint8)
    v16 = v8.astype(np.uint16) * 257  # x/255 == (257 x)/65535
    save(tmp_path / "a.png", v8)
    save(tmp_path / "b.png", v16)  # Pillow writes 16-bit gray PNG (mode I;16)
    tifffile.imwrite(tmp_path / "c.tif", v16)
    a, b, c = (decoders.read_image(tmp_path / n) for n in ("a.png", "b.png", "c.tif"))
    assert a.dtype == torch.float64 and a.shape == (1, 2, 3)
    assert torch.allclose(a[0, 0], torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64))
    assert torch.allclose(a, b, atol=1e-15) and torch.allclose(b, c, atol=1e-15)

    rgb8 = np.stack([v8, 255 - v8, v8 // 2], axis=-1)
    rgb16 = rgb8.astype(np.uint16) * 257
    save(tmp_path / "rgb8.png", rgb8)
    (tmp_path / "rgb16.png").write_bytes(png16(rgb16))
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16, photometric="rgb")
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb16, -1, 0), photometric="rgb", planarconfig="separate")
    loaded = [decoders.read_image(tmp_path / n, "rgb") for n in ("rgb8.png", "rgb16.png", "rgb16.tif", "planar.tif")]
    assert loaded[0].shape == (3, 2, 3)
    assert all(torch.allclose(loaded[0], x, atol=1e-15) for x in loaded[1:])


def test_16_bit_colour_png_keeps_full_precision_for_every_filter(tmp_path):
    rng = np.random.default_rng(0)
    for ch in (2, 3, 4):
        arr = rng.integers(0, 65536, (9, 7, ch), dtype=np.uint16)
        arr[0, 0] = [65535] * ch
        path = tmp_path / f"c{ch}.png"
        path.write_bytes(png16(arr))
        got = decoders.read_image(path, "rgb")
        colour = arr[..., :3] if ch >= 3 else np.repeat(arr[..., :1], 3, axis=-1)  # alpha dropped
        assert torch.equal(got, torch.from_numpy(np.moveaxis(colour, -1, 0) / 65535.0))
        if ch >= 3:  # an independent decoder (Pillow, 8-bit) reads the same file: the high bytes agree
            with Image.open(path) as im:
                assert np.array_equal(np.asarray(im.convert("RGB")), (colour >> 8).astype(np.uint8))
    (tmp_path / "cut.png").write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match=r"cut\.png: truncated PNG"):
        decoders.read_image(tmp_path / "cut.png")


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(arr).save(tmp_path / "x.jpg", exif=exif, quality=100)
    img = decoders.read_image(tmp_path / "x.jpg", "rgb")
    assert img.shape == (3, 6, 4) and int(img[0].argmax()) == 3  # the marker moved to the top-right corner


def test_rgba_drops_alpha_and_gray_is_bt601_luma(tmp_path):
    save(tmp_path / "x.png", np.array([[[200, 100, 50, 7]]], dtype=np.uint8), "RGBA")
    rgb = decoders.read_image(tmp_path / "x.png", "rgb")
    gray = decoders.read_image(tmp_path / "x.png", "gray")
    assert rgb.shape == (3, 1, 1) and gray.shape == (1, 1, 1)
    assert torch.allclose(rgb[:, 0, 0], torch.tensor([200.0, 100.0, 50.0], dtype=torch.float64) / 255)
    assert float(gray) == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255, abs=1e-15)


def test_palette_and_gray_channel_rules(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    rgb = decoders.read_image(tmp_path / "p.png", "rgb")
    assert torch.equal(rgb[:, 0], torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]], dtype=torch.float64))
    cmap = np.zeros((3, 256), np.uint16)
    cmap[1, 1] = 65535
    tifffile.imwrite(tmp_path / "p.tif", np.array([[0, 1]], np.uint8), photometric="palette", colormap=cmap)
    assert torch.equal(decoders.read_image(tmp_path / "p.tif", "rgb")[:, 0, 1], torch.tensor([0.0, 1.0, 0.0]).double())

    save(tmp_path / "g.png", np.array([[10, 250]], np.uint8))
    gray, rgb = decoders.read_image(tmp_path / "g.png", "gray"), decoders.read_image(tmp_path / "g.png", "rgb")
    assert gray.shape == (1, 1, 2) and rgb.shape == (3, 1, 2) and torch.equal(rgb, gray.expand(3, -1, -1))
    with pytest.raises(UsageError, match="channels"):
        decoders.read_image(tmp_path / "g.png", "bgr")


def test_float_tiff_is_kept_and_must_be_finite(tmp_path):
    arr = np.array([[0.25, 1.5], [-0.5, 0.0]], np.float32)
    tifffile.imwrite(tmp_path / "f.tif", arr)
    assert torch.equal(decoders.read_image(tmp_path / "f.tif")[0], torch.from_numpy(arr).double())
    for bad in (np.nan, np.inf):
        arr[1, 1] = bad
        tifffile.imwrite(tmp_path / "nan.tif", arr)
        ds = datasets.load_dataset(f"folder:{tmp_path}")
        with pytest.raises(DataError, match=r"nan\.tif.*NaN or infinite"):
            ds[[s.name for s in ds].index("nan.tif")].load()


def test_unsupported_channel_count(tmp_path):
    tifffile.imwrite(
        tmp_path / "five.tif", np.zeros((4, 4, 5), np.uint16), photometric="minisblack", planarconfig="contig"
    )
    with pytest.raises(DataError, match=r"five\.tif.*channel count \(5\)"):
        decoders.read_image(tmp_path / "five.tif")


# --------------------------------------------------------------------------- folders and errors


def test_folder_is_recursive_sorted_and_skips_other_files(tmp_path):
    img = np.zeros((4, 4), np.uint8)
    for name in ("b/z.png", "a.png", "b/a.jpg", "b/c/d.TIF", ".hidden/x.png", "b/.y.png"):
        save(tmp_path / name, img)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = datasets.load_dataset(f"folder:{tmp_path}")
    assert [s.name for s in ds] == ["a.png", "b/a.jpg", "b/c/d.TIF", "b/z.png"]
    assert len(ds) == 4 and ds[-1].path == tmp_path / "b" / "z.png" and len(ds[1:3]) == 2
    assert isinstance(ds[0], sources.ImageSource) and ds[0].at_mesh(2.0).shape == (1, 2, 2)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="missing-dir.*does not exist"):
        datasets.load_dataset(f"folder:{tmp_path / 'missing-dir'}")
    with pytest.raises(DataError, match=rf"no images found in {tmp_path}.*\.png, \.jpg, \.jpeg, \.tif, \.tiff"):
        datasets.load_dataset(f"folder:{tmp_path}")
    save(tmp_path / "ok.png", np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(DataError, match="ok.png is a file"):
        datasets.load_dataset(f"folder:{tmp_path / 'ok.png'}")
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:100])  # truncated
    ds = datasets.load_dataset(f"folder:{tmp_path}")  # listing works: decoding is lazy
    assert ds[1].load().shape == (1, 64, 64)
    with pytest.raises(DataError, match=r"bad\.png: cannot read image"):
        ds[0].load()
    with pytest.raises(UsageError, match="skimage, folder:PATH, div2k, rain100l, synthetic"):
        datasets.load_dataset("imagenet")
    with pytest.raises(UsageError, match=f"folder:{tmp_path}"):  # a bare folder gets a hint
        datasets.load_dataset(str(tmp_path))
    with pytest.raises(UsageError, match="channels"):
        datasets.load_dataset("skimage", channels="cmyk")


# --------------------------------------------------------------------------- decompression bombs


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(path: Path, width: int, height: int, depth: int = 16, colour: int = 2) -> Path:
    """A small PNG whose IHDR claims ``width x height`` pixels (a few rows of zero data)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\0" * 100_000, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def tiff_claiming(path: Path, width: int, height: int) -> Path:
    """A small little-endian zlib TIFF whose tags claim ``width x height`` 8-bit gray pixels in one strip."""
    strip = zlib.compress(b"\0" * 100_000, 9)
    tags = [  # (tag, type 3 SHORT / 4 LONG, value)
        (256, 4, width),
        (257, 4, height),
        (258, 3, 8),
        (259, 3, 8),  # Adobe deflate
        (262, 3, 1),  # min-is-black
        (273, 4, 0),  # strip offset, patched below
        (277, 3, 1),
        (278, 4, height),
        (279, 4, len(strip)),
    ]
    offset = 8 + 2 + 12 * len(tags) + 4
    tags[5] = (273, 4, offset)
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", t, k, 1, v) for t, k, v in tags)
    path.write_bytes(b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip)
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda p: png_claiming(p / "bomb16.png", 15000, 15000),  # the 16-bit colour decoder
        lambda p: tiff_claiming(p / "bomb.tif", 15000, 15000),  # tifffile
        lambda p: png_claiming(p / "bomb8.png", 15000, 15000, depth=8, colour=0),  # Pillow
    ],
    ids=["png16", "tiff", "pillow"],
)
def test_a_header_claiming_15000_squared_pixels_is_refused_before_allocation(tmp_path, make):
    path = make(tmp_path)
    assert path.stat().st_size < 2000  # crafted: a header and a little zlib data
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as err:
            decoders.read_image(path, "rgb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "15000x15000 = 225000000 pixels exceeds the limit of 100000000" in message
    assert "SYMMETRY_MAX_PIXELS" in message
    assert peak < 20e6  # nothing near the 225 MB (or 1.35 GB at 16-bit RGB) the header asks for was allocated


def test_the_pixel_limit_applies_to_every_decoder_and_can_be_raised(tmp_path, monkeypatch):
    arr16 = np.random.default_rng(1).integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    (tmp_path / "c16.png").write_bytes(png16(arr16))
    tifffile.imwrite(tmp_path / "g.tif", arr16[..., 0])
    save(tmp_path / "g8.png", (arr16[..., 0] >> 8).astype(np.uint8))
    save(tmp_path / "g8.jpg", (arr16[..., 0] >> 8).astype(np.uint8))
    for name in ("c16.png", "g.tif", "g8.png", "g8.jpg"):
        with pytest.raises(DataError, match=r"5 = 30 pixels exceeds the limit of 29"):
            decoders.read_image(tmp_path / name, max_pixels=29)
        assert decoders.read_image(tmp_path / name, max_pixels=30).shape == (1, 5, 6)
    exact = decoders.read_image(tmp_path / "c16.png", "rgb", max_pixels=30)
    assert torch.equal(exact, torch.from_numpy(np.moveaxis(arr16, -1, 0) / 65535.0))  # still bit-exact
    monkeypatch.setenv("SYMMETRY_MAX_PIXELS", "29")
    assert decoders.pixel_limit() == 29 and decoders.pixel_limit(1000) == 1000  # an explicit limit wins
    with pytest.raises(DataError, match="limit of 29"):
        datasets.load_dataset(f"folder:{tmp_path}")[0].load()
    assert datasets.load_dataset(f"folder:{tmp_path}", max_pixels=30)[0].load().shape == (1, 5, 6)
    for bad in ("-5", "lots", "1.5"):
        monkeypatch.setenv("SYMMETRY_MAX_PIXELS", bad)
        with pytest.raises(UsageError, match="SYMMETRY_MAX_PIXELS must be a positive whole number"):
            decoders.read_image(tmp_path / "g.tif")
    monkeypatch.delenv("SYMMETRY_MAX_PIXELS")
    assert decoders.pixel_limit() == decoders.MAX_IMAGE_PIXELS == 100_000_000
    for bad in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="max_pixels must be a positive whole number"):
            datasets.load_dataset("skimage", max_pixels=bad)


def test_a_zlib_stream_longer_than_the_header_promises_is_not_inflated_past_it(tmp_path):
    arr = np.arange(2 * 3 * 3, dtype=np.uint16).reshape(2, 3, 3) * 1000
    good = png16(arr, filters=(0,))
    rows = b"".join(b"\0" + arr[r].astype(">u2").tobytes() for r in range(2))
    ihdr = good[8:33]
    long_idat = zlib.compress(rows + b"\0" * 50_000_000, 9)  # 50 MB of trailing zeros in a 50 kB stream
    path = tmp_path / "long.png"
    path.write_bytes(good[:8] + ihdr + _chunk(b"IDAT", long_idat) + _chunk(b"IEND", b""))
    tracemalloc.start()
    try:
        image = decoders.read_image(path, "rgb")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(image, torch.from_numpy(np.moveaxis(arr, -1, 0) / 65535.0))
    assert peak < 5e6


def test_an_unreadable_subfolder_is_an_error_not_a_gap(tmp_path, monkeypatch):
    save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    save(tmp_path / "locked" / "b.png", np.zeros((4, 4), np.uint8))
    real_scandir = os.scandir

    def scandir(path="."):  # as root chmod 000 does not stop a listing, so the refusal is simulated
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(DataError, match=r"cannot list .*locked \(Permission denied\); fix its permissions"):
        datasets.load_dataset(f"folder:{tmp_path}")


def test_splits_are_checked_and_splitless_datasets_have_train_only(tmp_path):
    save(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    assert len(datasets.load_dataset(f"folder:{tmp_path}", split="train")) == 1
    for spec in (f"folder:{tmp_path}", "skimage"):
        with pytest.raises(UsageError, match="has no test split"):
            datasets.load_dataset(spec, split="test")
    for spec in (f"folder:{tmp_path}", "synthetic:isotropic,n=2,size=8", "rain100l", "div2k"):
        with pytest.raises(UsageError, match="split must be one of train, valid, test, got 'tset'"):
            datasets.load_dataset(spec, split="tset", data_root=tmp_path)


def test_first_images_refuses_counts_below_one():
    items = list(range(5))
    assert sources.first_images(items, None) == items and sources.first_images(items, 2) == [0, 1]
    assert sources.first_images(items, 9) == items
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(UsageError, match="--max-images must be a whole number >= 1"):
            sources.first_images(items, bad)


def test_data_root_resolution(tmp_path, monkeypatch):
    """The one rule, step by step: explicit, $SYMMETRY_DATA, ../shared/data beside a checkout, ~/.cache/symmetry."""
    shared = tmp_path / "shared" / "data"
    monkeypatch.setattr(locations, "DEVELOPMENT_DATA", shared)
    monkeypatch.setenv("SYMMETRY_DATA", str(tmp_path / "env"))
    assert locations.data_root(tmp_path / "explicit") == tmp_path / "explicit"
    assert locations.data_root("~/x") == Path.home() / "x"
    assert locations.data_root() == locations.data_root("") == tmp_path / "env"
    monkeypatch.delenv("SYMMETRY_DATA")
    assert locations.data_root() == Path.home() / ".cache" / "symmetry"  # no development data yet
    shared.mkdir(parents=True)
    assert locations.data_root() == shared
    monkeypatch.setattr(locations, "CHECKOUT", tmp_path / "installed")  # not a checkout: no pyproject.toml there
    assert locations.data_root() == Path.home() / ".cache" / "symmetry"


def test_skimage_default_is_offline_and_real(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the skimage dataset must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    ds = datasets.load_dataset("skimage")
    assert len(ds) >= 10 and [s.name for s in ds] == list(datasets.SKIMAGE_IMAGES)
    for s in ds:
        img = s.load()
        assert img.shape[0] == 1 and min(img.shape[-2:]) >= 256 and 0 <= img.min() and img.max() <= 1
        assert img.std() > 0.02  # real content, not a flat placeholder
    assert datasets.load_dataset("skimage", channels="rgb")[0].load().shape == (3, 512, 512)  # astronaut


def test_list_datasets_and_synthetic_delegation():
    names = datasets.list_datasets()
    assert {"skimage", "folder:PATH", "div2k", "rain100l"} <= set(names)
    assert any(k.startswith("synthetic:") for k in names) and all(isinstance(v, str) and v for v in names.values())
    family = next(k for k in names if k.startswith("synthetic:"))
    ds = datasets.load_dataset(f"{family},n=2,size=16", split="test")
    assert len(ds) == 2 and ds[0].at_mesh(1.0).shape[-1] == 16


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("synthetic:vonmises,kappa=nan", "kappa must be a finite number, got nan"),
        ("synthetic:vonmises,kappa=-1", "kappa must be >= 0, got -1"),
        ("synthetic:kfold,k=2.7", "k must be a whole number, got 2.7"),
        ("synthetic:isotropic,seed=-1", r"seed must be in \[0, 9.22337e\+18\], got -1"),
        ("synthetic:isotropic,n=inf", "n must be a whole number, got inf"),
        ("synthetic:isotropic,n=0", r"n must be in \[1, 1e\+06\], got 0"),
        ("synthetic:isotropic,size=1e9", r"size must be in \[1, 16384\], got 1e\+09"),
        ("synthetic:isotropic,long=1e300", r"long must be in \[1e-06, 1e\+06\]"),
        ("synthetic:deformed,stretch=1e9", r"stretch must be in \[0, 6\], got 1e\+09"),
        ("synthetic:isotropic,n=100000,atoms=1000", "n \\* atoms = 1e\\+08 exceeds"),
        ("synthetic:isotropic,n=2,n=3", "n is given twice"),
        ("synthetic:isotropic,stretch=1", "bad synthetic parameter 'stretch=1'"),
        ("synthetic:isotropic,n=two", "n needs a number, got 'two'"),
        ("synthetic:spiral", "unknown synthetic family 'spiral'"),
    ],
)
def test_synthetic_specs_are_checked_when_parsed(spec, fragment):
    with pytest.raises(UsageError, match=fragment) as err:
        datasets.load_dataset(spec)
    assert "\n" not in str(err.value)


def test_synthetic_parameters_keep_their_types_and_the_python_api_is_checked_too():
    from symmetry.synthetic import make_fields, parse_spec

    assert parse_spec("synthetic:kfold,k=4,kappa=8,size=32.0") == ("kfold", {"k": 4, "kappa": 8.0, "size": 32})
    assert isinstance(parse_spec("synthetic:kfold,k=4.0")[1]["k"], int)
    assert len(make_fields("vonmises", n=2, size=16.0, kappa=0)) == 2  # a whole float is a whole number
    with pytest.raises(UsageError, match="atoms must be a whole number, got 2.5"):
        make_fields("vonmises", n=2, atoms=2.5)
    with pytest.raises(UsageError, match="kappa must be a finite number, got 'high'"):
        make_fields("vonmises", kappa="high")
    with pytest.raises(UsageError, match="synthetic split must be one of train, valid, test, got 'tset'"):
        make_fields("vonmises", n=2, split="tset")


# --------------------------------------------------------------------------- Rain100L


def _fake_rain100l(root: Path, ks=(1, 2, 10)) -> Path:
    for split in ("train", "test"):
        for kind in ("rain", "norain"):
            for k in ks:
                value = k + (100 if kind == "rain" else 0)
                save(root / "rain100l" / split / kind / f"norain-{k}.png", np.full((6, 8, 3), value, np.uint8))
    return root / "rain100l"


def test_rain100l_pairs_from_a_fake_layout(tmp_path):
    base = _fake_rain100l(tmp_path)
    pairs = datasets.load_pairs("rain100l", data_root=tmp_path, split="test")
    assert [c.name for _, c in pairs] == [f"test/norain/norain-{k}.png" for k in (1, 2, 10)]  # sorted by K
    for (rain, clean), k in zip(pairs, (1, 2, 10)):
        assert rain.path.parent.name == "rain" and rain.path.name == clean.path.name
        assert float(rain.load()[0, 0, 0]) * 255 == pytest.approx(k + 100) and clean.load().shape == (3, 6, 8)
    # the root may be the folder holding rain100l/ or rain100l/ itself; the dataset is the clean side
    ds = datasets.load_dataset("rain100l", data_root=base, split="train")
    assert [s.path for s in ds] == [c.path for _, c in datasets.load_pairs(data_root=tmp_path)]
    assert ds[0].load().shape == (1, 6, 8)
    with pytest.raises(UsageError, match="train, test"):
        datasets.load_pairs(data_root=tmp_path, split="valid")
    (base / "train" / "rain" / "norain-2.png").unlink()
    with pytest.raises(DataError, match=r"norain-2\.png has no pair in .*rain"):
        datasets.load_pairs(data_root=tmp_path)
    with pytest.raises(DataError, match=rf"Rain100L not found under {tmp_path / 'nowhere'}.*--data-root"):
        datasets.load_dataset("rain100l", data_root=tmp_path / "nowhere")


@pytest.mark.skipif(not (SHARED_DATA / "rain100l").is_dir(), reason="../shared/data/rain100l is not present")
def test_real_rain100l_has_200_training_pairs():
    pairs = datasets.load_pairs("rain100l", data_root=SHARED_DATA, split="train")
    assert len(pairs) == 200 and len(datasets.load_pairs(data_root=SHARED_DATA / "rain100l", split="test")) == 100
    rain, clean = pairs[0]
    assert rain.load().shape == clean.load().shape and clean.load().shape[0] == 3


# --------------------------------------------------------------------------- DIV2K


def test_div2k_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'DIV2K_train_HR'} is missing.*--download.*DIV2K_train_HR\.zip"):
        datasets.load_dataset("div2k", data_root=tmp_path)
    with pytest.raises(DataError, match="DIV2K_valid_HR"):
        datasets.load_dataset("div2k", data_root=tmp_path, split="test")
    with pytest.raises(UsageError, match="train, valid, test"):
        datasets.load_dataset("div2k", data_root=tmp_path, split="holdout")


def _div2k_zip(folder: str = "DIV2K_valid_HR") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(2):
            png = io.BytesIO()
            Image.fromarray(np.full((12, 10, 3), 10 * i, np.uint8)).save(png, "PNG")
            zf.writestr(f"{folder}/{801 + i:04d}.png", png.getvalue())
    return buf.getvalue()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``payload`` at any path, honouring ``Range: bytes=N-``; ``cut`` breaks the next transfer off."""

    payload = b""
    cut: int | None = None
    ranges: list = []

    def do_GET(self):  # noqa: N802
        cls = type(self)
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
        cls.ranges.append(start)
        if start >= len(cls.payload):
            self.send_error(416)
            return
        body = cls.payload[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(cls.payload) - 1}/{len(cls.payload)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if cls.cut is not None:  # promise the whole body, send part of it, drop the connection
            body, cls.cut = body[: cls.cut], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    RangeHandler.payload, RangeHandler.cut, RangeHandler.ranges = _div2k_zip(), None, []
    httpd = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SYMMETRY_DIV2K_URL", f"http://127.0.0.1:{httpd.server_address[1]}/cvl/DIV2K/")
    monkeypatch.setitem(datasets.DIV2K_SHA256, "DIV2K_valid_HR.zip", hashlib.sha256(RangeHandler.payload).hexdigest())
    yield RangeHandler
    httpd.shutdown()
    httpd.server_close()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_div2k_download_is_verified_and_extracted(server, tmp_path):
    ds = datasets.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert [s.name for s in ds] == ["0801.png", "0802.png"] and server.ranges == [0]
    assert float(ds[1].load().mean()) == pytest.approx(10 / 255)
    assert _leftovers(tmp_path) == ["DIV2K_valid_HR", "DIV2K_valid_HR.zip"]  # no .part, no temporary folder
    again = datasets.load_dataset("div2k", data_root=tmp_path, split="test", download=True)  # present: no request
    assert len(again) == 2 and server.ranges == [0]


def test_the_download_bar_is_the_one_progress_bar(server, tmp_path, monkeypatch, capsys):
    """The downloader shows symmetry.runtime.progress in bytes (no bar of its own); a bad unit is refused."""
    from symmetry import download, runtime

    assert download.progress is runtime.progress
    calls = []

    def spy(total, label, **kwargs):
        calls.append((total, label, kwargs.get("unit"), kwargs.get("completed")))
        return runtime.progress(total, label, **kwargs)

    monkeypatch.setattr(download, "progress", spy)
    datasets.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert calls == [(len(server.payload), "download DIV2K_valid_HR.zip", "bytes", 0)]
    with pytest.raises(ValueError, match="unit must be 'items' or 'bytes'"):
        with runtime.progress(3, "x", unit="kg"):
            pass


def test_div2k_interrupted_download_resumes(server, tmp_path):
    server.cut = 100
    with pytest.raises(DataError, match=r"interrupted at 100 of \d+ bytes.*resume"):
        datasets.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert _leftovers(tmp_path) == ["DIV2K_valid_HR.zip.part"]
    assert (tmp_path / "DIV2K_valid_HR.zip.part").read_bytes() == server.payload[:100]
    ds = datasets.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert server.ranges == [0, 100] and len(ds) == 2  # the second request asked only for the rest
    assert (tmp_path / "DIV2K_valid_HR.zip").read_bytes() == server.payload
    assert _leftovers(tmp_path) == ["DIV2K_valid_HR", "DIV2K_valid_HR.zip"]


def test_div2k_complete_part_is_only_verified(server, tmp_path):
    (tmp_path / "DIV2K_valid_HR.zip.part").write_bytes(server.payload)  # whole, but not yet renamed
    assert len(datasets.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)) == 2
    assert server.ranges == [len(server.payload)]  # answered 416: nothing left to fetch


def test_div2k_wrong_checksum_leaves_no_dataset(server, tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.DIV2K_SHA256, "DIV2K_valid_HR.zip", "0" * 64)
    with pytest.raises(DataError, match=r"DIV2K_valid_HR\.zip: checksum mismatch.*expected 0{64}"):
        datasets.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert _leftovers(tmp_path) == []  # no folder, no archive, no partial download


def test_div2k_placed_archive_is_extracted_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("SYMMETRY_DIV2K_URL", "http://127.0.0.1:9/unreachable")
    monkeypatch.setitem(datasets.DIV2K_SHA256, "DIV2K_train_HR.zip", None)
    (tmp_path / "DIV2K_train_HR.zip").write_bytes(_div2k_zip("DIV2K_train_HR"))
    assert len(datasets.load_dataset("div2k", data_root=tmp_path)) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "DIV2K_train_HR.zip").write_bytes(_div2k_zip("wrong_folder"))
    with pytest.raises(DataError, match="no DIV2K_train_HR/ folder inside"):
        datasets.load_dataset("div2k", data_root=tmp_path / "other")
    assert _leftovers(tmp_path / "other") == ["DIV2K_train_HR.zip"]  # the temporary folder is gone


# --------------------------------------------------------------------------- augmentation


def test_augment_dih4_is_closed_and_holds_exact_quarter_turns():
    rng = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 6, 9, generator=rng, dtype=torch.float64), torch.rand(3, 5, 4, generator=rng).double()]
    base = sources.Dataset("two", [sources.ImageSource(f"x{i}", array=im) for i, im in enumerate(images)])
    closed = sources.augment(base, "dih4")
    assert len(closed) == 8 * len(base) and closed.name == "two+dih4"
    loaded = [s.load() for s in closed]
    for im in images:
        assert any(torch.equal(x, torch.rot90(im, 1, (-2, -1))) for x in loaded)
        assert any(torch.equal(x, torch.flip(im, (-1,))) for x in loaded)
    for x in loaded:  # closure: any element applied to any member is again a member
        for e in get_group("dih4"):
            y = transform_image(x, e)[0]
            assert any(y.shape == z.shape and torch.equal(y, z) for z in loaded)
    assert torch.equal(closed[4].load(), transform_image(images[0], get_group("dih4")[4])[0])
    # at_mesh resamples before transforming, which commutes with a quarter turn
    turned = next(s for s in closed if torch.equal(s.load(), torch.rot90(images[0], 1, (-2, -1))))
    assert torch.allclose(turned.at_mesh(2.0), to_mesh(torch.rot90(images[0], 1, (-2, -1)), 2.0), atol=1e-12)
    with pytest.raises(UsageError, match="quarter turns"):
        sources.augment(base, "rot8")
    with pytest.raises(UsageError):
        sources.augment(base, "hexagon")
