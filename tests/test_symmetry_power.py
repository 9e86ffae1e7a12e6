"""The power experiment: its cells, subsets, binomial intervals, and a clean skip without the photographs."""

from __future__ import annotations

import pytest
import torch

from experiments import symmetry_power as power
from experiments.runner import Context, SkipCell, cell_key, load_config


def test_cells_expand_presets_so_their_content_is_in_the_hash():
    config = load_config("symmetry_power", "quick")
    cells = power.cells(config)
    plain = [s for s in config["samples"] if s.get("controls", True)]
    estimators = [n for n, g in config["settings"].items() if not g.get("classifier")]
    expected = sum(len(power._variants(n, config)) for n in estimators) * sum(s["subsets"] for s in plain)
    expected += len(estimators) * sum(s["subsets"] for s in config["samples"] if s not in plain)  # no controls
    classifier = [c for c in cells if c["options"].get("classifier")]
    assert len(cells) - len(classifier) == expected
    assert classifier and all(c["images"] == 50 and c["subset"] < 3 and not c["symmetrised"] for c in classifier)
    assert cells[-len(classifier) :] == classifier  # the slow test runs last
    photos = next(c for c in cells if c["setting"] == "photos")
    assert photos["options"]["contrast"] is True and photos["options"]["mesh"] == [4.0]
    changed = {**config, "settings": {"photos": {"preset": "photos", "windows": 64}}}
    assert cell_key(power.cells(changed)[0]) != cell_key(photos)


def test_subsets_are_distinct_reproducible_and_differ_between_seeds():
    a = power.subset_indices(100, 25, 2027, 3)
    assert len(set(a.tolist())) == 25 and a.min() >= 0 and a.max() < 100
    assert (a == power.subset_indices(100, 25, 2027, 3)).all()
    assert not (a == power.subset_indices(100, 25, 101, 3)).all()
    with pytest.raises(ValueError):
        power.subset_indices(10, 25, 0, 0)


def test_wilson_interval_known_values():
    lo, hi = power.wilson(0, 10)
    assert lo == 0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = power.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert power.wilson(0, 3)[0] == 0.0 and power.wilson(3, 3)[1] == 1.0  # exactly, not 5.6e-17 by rounding


def test_symmetrised_subsets_are_d4_images_of_the_photos():
    """Every photo is moved by one of the eight quarter turns and flips, and all eight occur (a symmetrise that
    returned its input, or used only rotations, would leave the law as asymmetric as the photos)."""
    from symmetry.sources import ImageSource

    images = [ImageSource(f"x{i}", array=torch.rand(1, 6, 8, dtype=torch.float64)) for i in range(64)]
    out = power.symmetrise(images, 5, 0)
    used = set()
    for src, moved in zip(images, out):
        candidates = [torch.rot90(src.array, k, dims=(-2, -1)) for k in range(4)]
        candidates += [torch.flip(c, dims=(-1,)) for c in candidates]
        hits = [k for k, c in enumerate(candidates) if c.shape == moved.array.shape and torch.equal(c, moved.array)]
        assert len(hits) == 1
        used.add(hits[0])
    assert used == set(range(8))


def test_skips_with_a_clear_message_without_the_photographs(tmp_path):
    cell = power.cells(load_config("symmetry_power", "quick"))[0]
    with pytest.raises(SkipCell, match="--data-root"):
        power.run_cell(cell, Context(device=torch.device("cpu"), data_root=None))
    with pytest.raises(SkipCell, match="not under the data root"):
        power.run_cell(cell, Context(device=torch.device("cpu"), data_root=tmp_path))
