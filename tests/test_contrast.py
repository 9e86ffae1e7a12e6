"""The local-contrast channel commutes with quarter turns and flips (so the null stays exact), and the presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import symmetry
from symmetry.cli import main
from symmetry.contrast import ContrastSource
from symmetry.errors import UsageError
from symmetry.settings import PRESETS, Settings, preset_options
from symmetry.sources import ImageSource

D4 = {
    "rot90": lambda t: torch.rot90(t, 1, dims=(-2, -1)),
    "rot180": lambda t: torch.rot90(t, 2, dims=(-2, -1)),
    "flip": lambda t: torch.flip(t, dims=(-1,)),
    "flipud": lambda t: torch.flip(t, dims=(-2,)),
    "transpose": lambda t: t.transpose(-2, -1),
}


@pytest.mark.parametrize("name", list(D4))
@pytest.mark.parametrize("mesh", [1.0, 2.0, 3.0, 0.5])
def test_contrast_channel_commutes_with_d4(name, mesh):
    """c(pi_A x) = pi_A c(x) for every grid-exact A: the randomisation null re-transforms whole images."""
    move = D4[name]
    image = torch.from_numpy(np.random.default_rng(3).random((2, 24, 36)))
    direct = ContrastSource(ImageSource("x", array=image)).at_mesh(mesh)
    moved = ContrastSource(ImageSource("y", array=move(image).contiguous())).at_mesh(mesh)
    assert direct.shape[0] == 3  # two intensity channels and the contrast
    assert torch.allclose(moved, move(direct), atol=1e-12, rtol=0)


def test_contrast_channel_is_flat_on_flat_images_and_larger_on_texture():
    flat = ContrastSource(ImageSource("f", array=torch.full((1, 16, 16), 0.5, dtype=torch.float64))).at_mesh(2.0)
    assert torch.allclose(flat[1], torch.full_like(flat[1], float(np.log(1 / 255))))
    rough = torch.zeros(1, 16, 16, dtype=torch.float64)
    rough[:, 8:] = torch.from_numpy(np.random.default_rng(0).random((8, 16)))  # textured bottom, flat top
    c = ContrastSource(ImageSource("r", array=rough)).at_mesh(1.0)[1]
    assert c[12:].mean() > c[:4].mean() + 2


def test_contrast_sees_where_texture_is_when_intensity_cannot():
    """Images textured below and flat above, with no mean brightness difference: rejected for flipud with the
    contrast channel (a linear kernel), while the left-right flip is not."""
    rng = np.random.default_rng(1)
    sources = []
    for i in range(16):
        x = np.full((40, 40), 0.5)
        x[20:] += 0.3 * (rng.random((20, 40)) - 0.5)
        sources.append(ImageSource(f"t{i}", array=torch.from_numpy(x)[None]))
    options = dict(mesh=2.0, radius=8.0, windows=32, features=128, bandwidth=100.0, permutations=199, bootstrap=0)
    report = symmetry.measure_dataset(sources, "flip,flipud", device="cpu", contrast=True, **options)
    assert report.verdict("flipud")["symmetric"] is False
    assert report.verdict("flip")["symmetric"] is True


def test_preset_fills_settings_and_explicit_options_win():
    assert preset_options(None) == {}
    photos = preset_options("photos")
    assert photos["contrast"] is True and photos["mesh"] == (4.0,)
    photos["radius"] = -1  # a copy: the table itself is unchanged
    assert PRESETS["photos"]["radius"] == 16.0
    with pytest.raises(UsageError, match="unknown preset"):
        preset_options("portraits")
    with pytest.raises(UsageError, match="contrast"):
        Settings.from_options(contrast=True, exact=True)
    rng = np.random.default_rng(0)
    sources = [ImageSource(f"p{i}", array=torch.from_numpy(rng.random((1, 80, 80)))) for i in range(3)]
    report = symmetry.measure_dataset(
        sources, "flip", preset="photos", radius=8.0, features=64, permutations=99, bootstrap=0, device="cpu"
    )
    assert report.meshes == [4.0]
    assert report.settings["radius"] == 8.0 and report.settings["contrast"] is True
    assert report.settings["bandwidth"] == 100.0 and report.meta["bandwidth_mode"] == "fixed"
    assert report.meta["preset"] == "photos"


def test_cli_preset_and_unknown_preset(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(3):
        Image.fromarray((255 * rng.random((72, 72))).astype(np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "r.json"
    args = ["--dataset", f"folder:{folder}", "--group", "flip", "--preset", "photos", "--radius", "8"]
    assert main([*args, "--features", "64", "--permutations", "99", "--quiet", "--json", str(out)]) == 0
    report = symmetry.SymmetryReport.from_json(out)
    assert report.settings["contrast"] is True and report.meshes == [4.0] and report.settings["radius"] == 8.0
    assert main(["--preset", "portraits"]) == 2
    assert "error:" in capsys.readouterr().err
