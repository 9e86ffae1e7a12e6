"""Loaders: the channel rule, errors naming the path, Rain100L pairs, DIV2K layout and download, augmentation."""

import http.server
import io
import threading
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from symmetry import data
from symmetry.errors import DataError, UsageError
from symmetry.groups import get_group
from symmetry.transforms import transform_image


def test_8_and_16_bit_and_tiff_agree(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    v8 = np.array([[0, 51, 255]], dtype=np.uint8)
    v16 = v8.astype(np.uint16) * 257
    Image.fromarray(v8).save(tmp_path / "a.png")
    Image.fromarray(v16).save(tmp_path / "b.png")
    tifffile.imwrite(tmp_path / "c.tif", v16)
    a, b, c = (data.read_image(tmp_path / n) for n in ("a.png", "b.png", "c.tif"))
    assert torch.allclose(a, torch.tensor([[[0.0, 0.2, 1.0]]], dtype=torch.float64))
    assert torch.allclose(a, b) and torch.allclose(b, c)


def test_rgba_drops_alpha_and_gray_is_bt601(tmp_path):
    px = np.array([[[200, 100, 50, 7]]], dtype=np.uint8)
    Image.fromarray(px, "RGBA").save(tmp_path / "x.png")
    rgb = data.read_image(tmp_path / "x.png", "rgb")
    gray = data.read_image(tmp_path / "x.png", "gray")
    assert rgb.shape == (3, 1, 1) and torch.allclose(
        rgb[:, 0, 0], torch.tensor([200, 100, 50], dtype=torch.float64) / 255.0
    )
    assert float(gray) == pytest.approx((0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255)


def test_folder_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ("b/z.png", "a.png", "b/a.jpg"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = data.load_dataset(f"folder:{tmp_path}")
    assert [s.name for s in ds] == ["a.png", "b/a.jpg", "b/z.png"]


def test_errors_name_the_path(tmp_path):
    with pytest.raises(DataError, match="missing-dir"):
        data.load_dataset(f"folder:{tmp_path / 'missing-dir'}")
    with pytest.raises(DataError, match="no images found"):
        data.load_dataset(f"folder:{tmp_path}")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "bad.png").write_bytes((tmp_path / "ok.png").read_bytes()[:40])
    ds = data.load_dataset(f"folder:{tmp_path}")
    with pytest.raises(DataError, match="bad.png"):
        ds[0].load()
    with pytest.raises(UsageError, match="skimage"):
        data.load_dataset("imagenet")


def test_rain100l_pairs_from_a_fake_layout(tmp_path):
    for split in ("train", "test"):
        for kind in ("rain", "norain"):
            (tmp_path / "rain100l" / split / kind).mkdir(parents=True)
            for k in (1, 2):
                Image.fromarray(np.full((8, 8, 3), k, np.uint8)).save(
                    tmp_path / "rain100l" / split / kind / f"norain-{k}.png"
                )
    pairs = data.load_pairs("rain100l", data_root=tmp_path, split="test")
    assert len(pairs) == 2 and pairs[0][0].path.parent.name == "rain" and pairs[0][1].path.parent.name == "norain"
    assert len(data.load_dataset("rain100l", data_root=tmp_path / "rain100l", split="train")) == 2


def test_real_rain100l_has_200_training_pairs(shared_data):
    assert len(data.load_pairs("rain100l", data_root=shared_data, split="train")) == 200


def test_skimage_default_is_offline_and_real():
    ds = data.load_dataset("skimage")
    assert len(ds) >= 10
    assert all(min(s.load().shape[-2:]) >= 150 for s in ds)


def test_augment_contains_exact_quarter_turns():
    img = torch.rand(1, 6, 9, dtype=torch.float64)
    base = data.Dataset("one", [data.ImageSource("x", array=img)])
    closed = data.augment(base, "dih4")
    assert len(closed) == 8
    assert any(torch.equal(s.load(), torch.rot90(img, 1, (-2, -1))) for s in closed)
    assert torch.equal(closed[4].load(), transform_image(img, get_group("dih4")[4])[0])
    with pytest.raises(UsageError):
        data.augment(base, "rot8")


def test_div2k_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="DIV2K_train_HR.*--download"):
        data.load_dataset("div2k", data_root=tmp_path)


def _zip_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(2):
            png = io.BytesIO()
            Image.fromarray(np.full((12, 12, 3), 10 * i, np.uint8)).save(png, "PNG")
            zf.writestr(f"DIV2K_valid_HR/{i:04d}.png", png.getvalue())
    return buf.getvalue()


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    cut: int | None = None  # serve only this many bytes once (an interrupted transfer)

    def do_GET(self):  # noqa: N802
        start = 0
        if rng := self.headers.get("Range"):
            start = int(rng.split("=")[1].split("-")[0])
        body = self.payload[start:]
        if type(self).cut is not None:
            body, type(self).cut = body[: type(self).cut], None
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    _RangeHandler.payload = _zip_bytes()
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(data, "DIV2K_URL", f"http://127.0.0.1:{httpd.server_address[1]}")
    yield _RangeHandler
    httpd.shutdown()


def test_div2k_download_resumes_verifies_and_extracts(server, tmp_path, monkeypatch):
    import hashlib

    monkeypatch.setitem(data.DIV2K_SHA256, "DIV2K_valid_HR", hashlib.sha256(server.payload).hexdigest())
    server.cut = 100  # the first transfer breaks off after 100 bytes
    archive = tmp_path / "DIV2K_valid_HR.zip"
    with pytest.raises(DataError):  # truncated: checksum fails, nothing extracted
        data.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert not (tmp_path / "DIV2K_valid_HR").exists()
    # a partial file left by an interrupted transfer is resumed with a Range request
    (tmp_path / "DIV2K_valid_HR.zip.part").write_bytes(server.payload[:100])
    ds = data.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert archive.exists() and [s.name for s in ds] == ["0000.png", "0001.png"]
    assert float(ds[1].load().mean()) == pytest.approx(10 / 255)


def test_div2k_wrong_checksum_leaves_no_dataset(server, tmp_path, monkeypatch):
    monkeypatch.setitem(data.DIV2K_SHA256, "DIV2K_valid_HR", "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch"):
        data.load_dataset("div2k", data_root=tmp_path, split="valid", download=True)
    assert not (tmp_path / "DIV2K_valid_HR").exists() and not (tmp_path / "DIV2K_valid_HR.zip").exists()
