"""Benchmark test-set layouts, rotated test sets and the restoration protocol, on small made-up Set5-style folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import protocol, testsets
from analysis.tasks import Example, bicubic_lr, crop_to_multiple
from analysis.train import train
from symmetry.errors import DataError, UsageError

SIZES = [(30, 35), (28, 28), (33, 26)]  # deliberately not multiples of 2, 3 or 4


def _image(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 4.0 + seed) * np.cos(yy / 5.0) + 20 * rng.standard_normal((h, w))
    rgb = np.stack([base, base * 0.8 + 30, 255 - base], -1)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _lr_png(hr: np.ndarray, scale: int) -> np.ndarray:
    t = torch.from_numpy(hr).permute(2, 0, 1).double() / 255.0
    lr = bicubic_lr(crop_to_multiple(t, scale), scale)
    return np.round(lr.permute(1, 2, 0).numpy() * 255.0).astype(np.uint8)


def make_hr_folder(root: Path) -> Path:
    for i, (h, w) in enumerate(SIZES):
        _save(root / f"img{i}.png", _image(h, w, i))
    return root


def make_hr_lr(root: Path, scale: int = 2) -> Path:
    for i, (h, w) in enumerate(SIZES):
        hr = _image(h, w, i)
        _save(root / "HR" / f"img{i}.png", hr)
        _save(root / "LR_bicubic" / f"X{scale}" / f"img{i}x{scale}.png", _lr_png(hr, scale))
    return root


def make_srf(root: Path, scales=(2, 3)) -> Path:
    for s in scales:
        for i, (h, w) in enumerate(SIZES):
            hr = _image(h, w, i)
            hr = hr[: h - h % s, : w - w % s]
            _save(root / f"image_SRF_{s}" / f"img_{i:03d}_SRF_{s}_HR.png", hr)
            _save(root / f"image_SRF_{s}" / f"img_{i:03d}_SRF_{s}_LR.png", _lr_png(hr, s))
    return root


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_hr_folder_is_modcropped_and_its_lr_is_matlab_bicubic(tmp_path, scale):
    root = make_hr_folder(tmp_path / "Set5")
    assert testsets.detect_layout(root) == "hr"
    items = testsets.load_testset(root, scale=scale)
    assert [it.name for it in items] == ["img0", "img1", "img2"]
    for it, (h, w) in zip(items, SIZES, strict=True):
        assert it.size == (h - h % scale, w - w % scale)
        assert it.input_store.shape[-2:] == (it.size[0] // scale, it.size[1] // scale)
        assert torch.equal(it.input, bicubic_lr(it.target.double(), scale).float())


def test_given_lr_files_are_used_and_match_the_made_ones(tmp_path):
    made = testsets.load_testset(make_hr_folder(tmp_path / "a"), scale=2)
    for layout, root in (("hr-lr", make_hr_lr(tmp_path / "b")), ("srf", make_srf(tmp_path / "c"))):
        assert testsets.detect_layout(root) == layout
        items = testsets.load_testset(root, scale=2)
        assert len(items) == 3
        for a, b in zip(made, items, strict=True):
            assert torch.equal(a.target_store, b.target_store) and torch.equal(a.input_store, b.input_store)
    # one image_SRF_<s> folder passed directly; scale 1 (denoising) reads HR only
    assert len(testsets.load_testset(tmp_path / "c" / "image_SRF_3", scale=3)) == 3
    assert all(it.input_store is None for it in testsets.load_testset(tmp_path / "c", scale=1))


def test_bad_test_set_folders_are_data_errors(tmp_path):
    srf = make_srf(tmp_path / "srf")
    (srf / "image_SRF_2" / "img_001_SRF_2_LR.png").unlink()
    with pytest.raises(DataError, match="without an HR/LR partner"):
        testsets.load_testset(srf, scale=2)
    with pytest.raises(DataError, match="no image_SRF_4 folder"):
        testsets.load_testset(srf, scale=4)
    hrlr = make_hr_lr(tmp_path / "hrlr")
    (hrlr / "LR_bicubic" / "X2" / "img1x2.png").unlink()
    with pytest.raises(DataError, match="no LR for img1.png"):
        testsets.load_testset(hrlr, scale=2)
    wrong = make_hr_lr(tmp_path / "wrong", scale=2)
    (wrong / "LR_bicubic" / "X2").rename(wrong / "LR_bicubic" / "X3")
    for f in (wrong / "LR_bicubic" / "X3").iterdir():
        f.rename(f.with_name(f.name.replace("x2", "x3")))
    with pytest.raises(DataError, match="is the scale 3 right"):
        testsets.load_testset(wrong, scale=3)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DataError, match="unknown test set layout"):
        testsets.detect_layout(tmp_path / "empty")
    with pytest.raises(DataError, match="does not exist"):
        testsets.detect_layout(tmp_path / "nope")


def test_rotated_test_set_holds_the_eight_exact_dihedral_copies():
    t = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5) / 30
    copies = testsets.rotated([Example("a", t.clone(), t.clone())])
    assert [c.name for c in copies][0] == "a@e" and len(copies) == 8
    expected = [torch.rot90(t, k, (1, 2)) for k in range(4)] + [torch.rot90(t.flip(2), k, (1, 2)) for k in range(4)]
    for c in copies:
        assert torch.equal(c.input, c.target)
        assert sum(e.shape == c.target.shape and torch.equal(e, c.target) for e in expected) == 1
    for e in expected:
        assert any(e.shape == c.target.shape and torch.equal(e, c.target) for c in copies)


def _y(img: torch.Tensor) -> np.ndarray:
    a = img.double().numpy() * 255.0
    return 16.0 + (65.481 * a[0] + 128.553 * a[1] + 24.966 * a[2]) / 255.0


TINY = dict(model="plain", width=4, depth=1, kernel_size=3, patch_size=24, batch_size=2, steps=2, data="skimage")
TINY.update(max_images=2, val_images=0, log_every=1, val_every=1000, ckpt_every=1000, device="cpu")


def test_protocol_end_to_end_on_a_set5_style_folder(tmp_path):
    root = make_hr_lr(tmp_path / "Set5", scale=2)
    run = train({**TINY, "task": "sr", "scale": 2, "out": str(tmp_path / "sr")}, quiet=True, progress=False)
    code = protocol.main([str(run), "--testset", f"set5:{root}", "--rotated", "--quiet"])
    assert code == 0
    rows = json.loads((run / protocol.PROTOCOL_FILE).read_text())["rows"]
    assert [(r["rotation"], r["n_images"], r["border"]) for r in rows] == [("none", 3, 2), ("dih4", 24, 2)]
    images = (run / protocol.PROTOCOL_IMAGES_FILE).read_text().splitlines()
    assert len(images) == 1 + 3 + 24
    # the bicubic baseline scored by hand: Y of BT.601 on [16, 235], border = scale, 8-bit output
    items = testsets.load_testset(root, scale=2)
    ex = Example("img0", items[0].input, items[0].target)
    from symmetry.transforms import imresize

    up = torch.round(imresize(ex.input, 2).clamp(0, 1) * 255) / 255
    a, b = _y(up)[2:-2, 2:-2], _y(ex.target)[2:-2, 2:-2]
    by_hand = 10 * math.log10(255.0**2 / np.mean((a - b) ** 2))
    summary, frame = protocol.evaluate_protocol(run, [("set5", str(root))], write=False, show_progress=False)
    assert frame.loc[0, "baseline_psnr"] == pytest.approx(by_hand, abs=1e-9)
    # the identity copy of the rotated set scores exactly as the original image
    rot, _ = protocol.evaluate_protocol(run, [("set5", str(root))], rotated=True, write=False, show_progress=False)
    assert rot[0]["psnr"] == summary[0]["psnr"]


def test_protocol_denoising_noise_is_fixed_and_errors_are_one_line(tmp_path, capsys):
    root = make_srf(tmp_path / "Set14")
    run = train({**TINY, "task": "denoise", "sigma": 15.0, "out": str(tmp_path / "dn")}, quiet=True, progress=False)
    a, _ = protocol.evaluate_protocol(run, [("set14", str(root))], write=False, show_progress=False)
    b, _ = protocol.evaluate_protocol(run, [("set14", str(root))], write=False, show_progress=False)
    assert a == b and a[0]["border"] == 0 and a[0]["sigma"] == 15.0
    assert 20 < a[0]["baseline_psnr"] < 30  # noise of sigma 15 alone: about 24.6 dB
    (root / "image_SRF_2" / "img_000_SRF_2_LR.png").unlink()
    sr = train({**TINY, "task": "sr", "scale": 2, "out": str(tmp_path / "sr")}, quiet=True, progress=False)
    for argv, code, message in [
        ([str(sr), "--testset", f"set14:{root}"], 1, "without an HR/LR partner"),
        ([str(sr), "--testset", f"set14:{tmp_path / 'missing'}"], 1, "does not exist"),
        ([str(sr), "--testset", "set14"], 2, "needs a folder"),
        ([str(sr), "--testset", "rain100l"], 2, "deraining set"),
        ([str(tmp_path), "--testset", f"set14:{root}"], 2, "not a run directory"),
    ]:
        assert protocol.main(argv) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_parse_testset():
    assert protocol.parse_testset("Set5:/d/Set5") == ("set5", "/d/Set5")
    assert protocol.parse_testset("rain100l") == ("rain100l", None)
    with pytest.raises(UsageError):
        protocol.parse_testset("set5:")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


def test_restoration_table_protocol_cells_run_end_to_end(tmp_path, monkeypatch):
    """A [full]-style config (test sets named) trains, scores on a Set5-style folder and tabulates, on the CPU."""
    import tomllib

    import pandas as pd

    from experiments import restoration_table as rt
    from experiments.run import main as run_main

    monkeypatch.setenv("SYMMETRY_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    make_hr_lr(root / "Set5", scale=2)
    packaged = tomllib.loads((Path(rt.__file__).parent / "configs" / "restoration_table.toml").read_text())
    cfg = {**packaged["quick"], **packaged["full"]}
    cfg.update(tasks=["sr"], models=["plain", "tl"], width=2, depth=1, kernel_size=3, sr_scales=[2], steps=2)
    cfg.update(batch_size=2, patch_size=16, lr_step=1, nproc_per_node=1, testsets=["Set5"], seeds=[0])
    cfg.update(data=f"folder:{root / 'Set5' / 'HR'}")
    text = "[quick]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in cfg.items())
    (tmp_path / "cfg.toml").write_text(text)
    argv = ["restoration_table", "--quick", "--config", str(tmp_path / "cfg.toml"), "--results", str(tmp_path / "r")]
    assert run_main([*argv, "--data-root", str(root), "--device", "cpu", "--quiet"]) == 0
    frame = pd.read_csv(tmp_path / "r" / "restoration_table" / "quick.csv")
    assert sorted(zip(frame["model"], frame["rotation"], frame["n_images"], strict=True)) == [
        ("plain", "dih4", 24), ("plain", "none", 3), ("tl", "dih4", 24), ("tl", "none", 3)
    ]  # fmt: skip
    assert set(frame["border"]) == {2}
    table = rt.markdown(frame)
    assert "| SR x2 | set5 (rot) |" in table and "plain" in table and "tl" in table
    # a missing test set skips its cells (it is not an error)
    cfg["testsets"] = ["Set14"]
    (tmp_path / "cfg.toml").write_text("[quick]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in cfg.items()))
    assert run_main([*argv, "--data-root", str(root), "--device", "cpu", "--quiet"]) == 0
