"""sr_benchmark: the authors' EDSR layout, the paired-difference interval, rotated sets, the pipeline on stand-ins."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from analysis.layers import GroupConv, LiftConv
from analysis.models import (
    AUTHORS_RES_SCALE,
    RGB_MEAN,
    UPSAMPLE_KERNEL_SIZE,
    build_model,
    count_parameters,
    plain_parameter_count,
)
from analysis.tasks import Example, bicubic_lr, crop_to_multiple
from analysis.testsets import load_testset, rotated_cycle
from experiments import sr_benchmark
from experiments.runner import Context, load_config, run_experiment
from experiments.sr_benchmark_stats import paired_interval, per_image
from symmetry.errors import DataError, UsageError
from symmetry.groups import get_group
from symmetry.transforms import transform_image

# ---- the authors' layout ------------------------------------------------------------------------------------------


def test_authors_plain_is_edsr_baseline():
    """EDSR-baseline x2 (64 channels, 16 blocks, 3x3) has 1,369,859 parameters, the count of the EDSR release."""
    net = build_model("plain", plain_width=64, depth=16, kernel_size=3, scale=2, layout="authors")
    assert count_parameters(net) == 1_369_859
    assert plain_parameter_count(64, scale=2, in_channels=3, depth=16, kernel_size=3, layout="authors") == 1_369_859
    # negative control: this project's residual layout ends in a kernel_size conv, so with 5x5 convs the counts part
    res5 = build_model("plain", plain_width=64, depth=16, kernel_size=5, scale=2, layout="residual")
    auth5 = build_model("plain", plain_width=64, depth=16, kernel_size=5, scale=2, layout="authors")
    assert count_parameters(res5) - count_parameters(auth5) == 64 * 3 * (25 - 9)


def _edsr_bconv_count(width: int, group_order: int, depth: int, n_basis_lift: int, n_basis: int, scale: int) -> int:
    """The authors' ``edsr_bconv``: lifting conv, ``depth`` blocks of two group convs, no body conv, then an
    ordinary upsampler (3x3 to 4C, pixel shuffle) and a 3x3 conv on ``C = width * |G|`` channels."""
    c = width * group_order
    n = width * 3 * n_basis_lift + width  # head: one weight per (out field, colour, basis function), bias per field
    n += 2 * depth * (width * width * group_order * n_basis + width)
    stages = int(math.log2(scale))
    n += stages * (c * 4 * c * UPSAMPLE_KERNEL_SIZE**2 + 4 * c)
    n += c * 3 * 9 + 3
    return n


@pytest.mark.parametrize("group,width", [("rot8", 2), ("rot4", 3)])
def test_authors_equivariant_parameter_formula(group, width):
    net = build_model("equivariant", group=group, width=width, depth=2, kernel_size=5, scale=2, basis="bicubic",
                      layout="authors")  # fmt: skip
    lift = next(m for m in net.modules() if isinstance(m, LiftConv))
    conv = next(m for m in net.modules() if isinstance(m, GroupConv))
    order = {"rot8": 8, "rot4": 4}[group]
    want = _edsr_bconv_count(width, order, 2, lift.n_basis, conv.n_basis, 2)
    assert count_parameters(net) == want
    assert net.body_tail is None
    # negative control: the residual layout has the body conv and an equivariant 5x5 tail, so the count differs
    res = build_model("equivariant", group=group, width=width, depth=2, kernel_size=5, scale=2, basis="bicubic")
    assert count_parameters(res) != want


def test_authors_layout_has_no_global_skip():
    """With every weight zero the authors' net returns the RGB mean (no bicubic skip); the residual one bicubic."""
    x = torch.rand(1, 3, 10, 12)
    for layout, expected in (
        ("authors", torch.tensor(RGB_MEAN).view(1, 3, 1, 1).expand(1, 3, 20, 24)),
        ("residual", None),
    ):
        net = build_model("equivariant", group="rot4", width=1, depth=1, kernel_size=3, scale=2,
                          basis="bicubic", layout=layout)  # fmt: skip
        with torch.no_grad():
            for p in net.parameters():
                p.zero_()
        y = net(x)
        if expected is None:
            torch.testing.assert_close(y, net.skip(x))
            assert y.std() > 0.01  # the bicubic image, not a constant
        else:
            torch.testing.assert_close(y, expected)
            assert net.skip(x).abs().max() == 0


def test_authors_res_scale_scales_the_blocks():
    torch.manual_seed(0)
    a = build_model("plain", plain_width=4, depth=1, kernel_size=3, scale=2, layout="authors")
    b = build_model("plain", plain_width=4, depth=1, kernel_size=3, scale=2, layout="authors", res_scale=1.0)
    b.load_state_dict(a.state_dict())
    block = a.body[0]
    assert block.res_scale == AUTHORS_RES_SCALE
    x = torch.rand(1, 4, 6, 6)
    inner = block.conv2(torch.relu(block.conv1(x)))
    torch.testing.assert_close(block(x), x + 0.1 * inner)
    assert not torch.allclose(a(torch.rand(1, 3, 6, 6)), b(torch.rand(1, 3, 6, 6)))


def test_unknown_layout_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown layout"):
        build_model("plain", layout="edsr")


# ---- the paired interval ------------------------------------------------------------------------------------------


def test_paired_interval_known_values():
    d = np.full((3, 10), 0.25)
    ci = paired_interval(d)
    assert ci["mean"] == pytest.approx(0.25) and ci["high"] - ci["low"] == pytest.approx(0.0, abs=1e-12)
    # one seed: the textbook paired t interval over images
    x = np.array([0.1, 0.4, -0.2, 0.3, 0.25, 0.05])
    ci = paired_interval(x[None])
    half = stats.t.ppf(0.975, 5) * x.std(ddof=1) / math.sqrt(6)
    assert ci["low"] == pytest.approx(x.mean() - half) and ci["high"] == pytest.approx(x.mean() + half)
    # balanced crossed design by hand: d = a_s + b_i exactly (no residual) -> Var = (MS_s + MS_i) / (S I)
    a, b = np.array([-1.0, 0.0, 1.0]), np.array([-0.5, 0.5, -0.5, 0.5])
    d = a[:, None] + b[None, :]
    ms_s, ms_i = 4 * (a**2).sum() / 2, 3 * (b**2).sum() / 3
    assert paired_interval(d)["se"] == pytest.approx(math.sqrt((ms_s + ms_i) / 12))


def _coverage(interval, sims: int = 400) -> float:
    rng = np.random.default_rng(7)
    hit = 0
    for _ in range(sims):
        d = 0.2 + rng.normal(0, 0.3, (3, 1)) + rng.normal(0, 0.5, (1, 40)) + rng.normal(0, 0.2, (3, 40))
        lo, hi = interval(d)
        hit += lo <= 0.2 <= hi
    return hit / sims


def test_paired_interval_covers_with_seed_and_image_effects():
    cover = _coverage(lambda d: (paired_interval(d)["low"], paired_interval(d)["high"]))
    assert cover >= 0.9

    # negative control: treating the 120 (seed, image) differences as independent ignores the seed effect
    def naive(d):
        flat = d.ravel()
        half = stats.t.ppf(0.975, flat.size - 1) * flat.std(ddof=1) / math.sqrt(flat.size)
        return flat.mean() - half, flat.mean() + half

    assert _coverage(naive) < 0.85


# ---- rotated sets ---------------------------------------------------------------------------------------------------


def test_rotated_cycle_turns_every_image_once():
    exs = [Example(f"i{k}", torch.rand(3, 4, 5), torch.rand(3, 8, 10)) for k in range(9)]
    out = rotated_cycle(exs)
    assert len(out) == 9
    names = [e.name.split("@")[1] for e in out]
    assert "e" not in names and len(set(names)) == 7  # the seven non-identity elements of dih4, cycling
    assert names[0] == names[7]
    g = get_group("dih4").element(names[3])
    torch.testing.assert_close(out[3].target, transform_image(exs[3].target, g)[0])
    assert not torch.equal(out[3].target, exs[3].target)  # negative control: a real turn, not the identity


# ---- stand-in data --------------------------------------------------------------------------------------------------


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 120 + 60 * np.sin(xx / 5.0 + seed) * np.cos(yy / 7.0) + 15 * rng.standard_normal((h, w))
    return np.clip(np.round(np.stack([base, 0.8 * base + 30, 255 - base], -1)), 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_stand_in_root(root: Path) -> Path:
    """rain100l/train/{rain,norain}, sr_benchmarks/{Set5,Set14,B100}/HR: tiny images in the standard layouts."""
    for k in range(1, 5):
        img = _photo(52, 60, k)
        _save(root / "rain100l" / "train" / "norain" / f"norain-{k}.png", img)
        _save(root / "rain100l" / "train" / "rain" / f"rain-{k}.png", img)
    for j, name in enumerate(("Set5", "Set14", "B100")):
        for k in range(2):
            _save(root / "sr_benchmarks" / name / "HR" / f"img_{k}.png", _photo(34 + 2 * k, 40, 10 * j + k))
    return root


def tiny_config() -> dict:
    cfg = load_config("sr_benchmark", "quick")
    cfg.update(channels=8, depth=1, patch_size=16, batch_size=2, steps=3, sa_steps=2, seeds=[0], eq_images=1)
    cfg.update(eq_crop=12, flops_size=8, eps_groups=["flip"], eps_images=0)
    return cfg


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> Path:
    return make_stand_in_root(tmp_path_factory.mktemp("sr_data"))


def test_pipeline_on_stand_ins_reproduces(stand_in, tmp_path):
    cfg = tiny_config()
    first = run_experiment("sr_benchmark", "quick", out=tmp_path / "a", config=cfg, data_root=stand_in, progress=False,
                           log=lambda s: None)  # fmt: skip
    models = first[first["model"] != "data-eps"]
    # one row per (model, seed, test set, rotation): 3 sets unrotated, the rotated_testsets (Set5, Set14) rotated
    assert len(models) == (1 + 8) * (3 + 2)
    assert not models.duplicated(["model", "seed", "testset", "rotation"]).any()
    for col in ("psnr", "ssim", "params", "flops", "steps", "train_seconds", *sr_benchmark.EQ_COLUMNS):
        assert col in models
    for name in ("sa", "tl-cont"):
        assert models[models["model"] == name].iloc[0]["steps"] == 3 + 2  # tl's steps plus the fine-tuning
    assert len(per_image(first)) == 9 * (3 + 2) * 2
    eps = first[first["model"] == "data-eps"]
    assert list(eps["eps_group"]) == ["flip"] and math.isfinite(eps["eps"].iloc[0])
    second = run_experiment("sr_benchmark", "quick", out=tmp_path / "b", config=cfg, data_root=stand_in,
                            progress=False, log=lambda s: None)  # fmt: skip
    key = ["model", "seed", "testset", "rotation"]
    a = models.sort_values(key)["psnr_per_image"].tolist()
    b = second[second["model"] != "data-eps"].sort_values(key)["psnr_per_image"].tolist()
    assert a == b  # same seeds, same numbers
    # a cached cell without the equivariance columns gets them from its stored weights, equal to a fresh run's
    ctx = Context(device=torch.device("cpu"), data_root=stand_in, workdir=tmp_path / "a" / "sr_benchmark" / "work")
    rot8 = next(c for c in sr_benchmark.cells(cfg) if c["model"] == "rot8")
    cache = sr_benchmark._cache_path(rot8, ctx)
    stored = json.loads(cache.read_text())
    stripped = [{k: v for k, v in r.items() if not k.startswith("eq_")} for r in stored["rows"]]
    cache.write_text(json.dumps({"cell": rot8, "rows": stripped}))
    again = sr_benchmark.run_cell(rot8, ctx)
    assert [r["eq_res_rot8"] for r in again] == [r["eq_res_rot8"] for r in stored["rows"]]
    # negative control: another seed gives other numbers
    cfg3 = dict(cfg, seeds=[1], models=["plain"])
    third = run_experiment("sr_benchmark", "quick", out=tmp_path / "c", config=cfg3, data_root=stand_in,
                           progress=False, log=lambda s: None)  # fmt: skip
    p0 = models[(models["model"] == "plain")].sort_values(key)["psnr_per_image"].tolist()
    p1 = third[third["model"] == "plain"].sort_values(key)["psnr_per_image"].tolist()
    assert p0 != p1


def test_missing_testset_skips_the_cell(stand_in, tmp_path):
    cfg = dict(tiny_config(), testsets=["Set5", "Urban100"], models=["bicubic"])
    frame = run_experiment("sr_benchmark", "quick", out=tmp_path, config=cfg, data_root=stand_in, progress=False,
                           log=lambda s: None)  # fmt: skip
    assert set(frame["model"]) == {"data-eps"}  # the bicubic cell is skipped, not stored


def test_bad_model_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown model"):
        sr_benchmark.check_config(dict(tiny_config(), models=["plain", "edsr-xl"]))


# ---- DIV2K and Urban100 from local roots -----------------------------------------------------------------------


def test_div2k_training_items_from_standard_layout(tmp_path):
    for k in range(1, 3):
        _save(tmp_path / "DIV2K_train_HR" / f"{k:04d}.png", _photo(31, 40, k))
    items = sr_benchmark.training_items("div2k", str(tmp_path), 2, 0)
    assert len(items) == 2
    hr, lr = items[0].target, items[0].input
    assert tuple(hr.shape) == (3, 30, 40) and tuple(lr.shape) == (3, 15, 20)  # modcrop, then MATLAB bicubic
    torch.testing.assert_close(lr, bicubic_lr(hr, 2))
    with pytest.raises(DataError):  # negative control: no DIV2K folder
        sr_benchmark.training_items("div2k", str(tmp_path / "nothing"), 2, 0)


def test_urban100_hr_lr_layout(tmp_path):
    root = tmp_path / "Urban100"
    for k in range(2):
        hr = _photo(30, 36, k)
        _save(root / "HR" / f"img_{k:03d}.png", hr)
        t = torch.from_numpy(hr).permute(2, 0, 1).double() / 255.0
        lr = bicubic_lr(crop_to_multiple(t, 2), 2)
        _save(
            root / "LR_bicubic" / "X2" / f"img_{k:03d}x2.png",
            np.round(lr.permute(1, 2, 0).numpy() * 255).astype(np.uint8),
        )
    items = load_testset(root, scale=2)
    assert [it.name for it in items] == ["img_000", "img_001"] and tuple(items[0].input.shape) == (3, 15, 18)
    _save(root / "LR_bicubic" / "X2" / "img_001x2.png", np.zeros((10, 10, 3), np.uint8))  # wrong size
    with pytest.raises(DataError, match="is 10x10"):
        load_testset(root, scale=2)


def test_cells_put_sa_after_tl_and_cache_rows(stand_in, tmp_path):
    cfg = dict(tiny_config(), seeds=[0, 1])
    cells = sr_benchmark.cells(cfg)
    models = [c["model"] for c in cells]
    assert models[:2] == ["data-eps", "bicubic"] and set(models[-4:]) == {"sa", "tl-cont"}
    matched = next(c for c in cells if c["model"] == "plain-matched")
    rot8 = sr_benchmark.build(next(c for c in cells if c["model"] == "rot8"), cfg)
    plain = sr_benchmark.build(matched, cfg)
    target = count_parameters(rot8)
    w = matched["plain_width"]
    counts = [plain_parameter_count(v, scale=2, in_channels=3, depth=1, kernel_size=3, layout="authors")
              for v in (w - 1, w, w + 1)]  # fmt: skip
    assert counts[1] == count_parameters(plain)
    assert abs(counts[1] - target) <= min(abs(counts[0] - target), abs(counts[2] - target))  # the closest width
    ctx = Context(device=torch.device("cpu"), data_root=stand_in, workdir=tmp_path)
    rows = sr_benchmark.run_cell(cells[1], ctx)
    cached = json.loads(sr_benchmark._cache_path(cells[1], ctx).read_text())["rows"]
    assert json.dumps(cached) == json.dumps(rows)
    assert (
        sr_benchmark.run_cell(cells[1], Context(device=torch.device("cpu"), data_root=None, workdir=tmp_path)) == cached
    )


def test_bicubic_row_is_exact_for_quarter_turns_not_45_degrees():
    """The equivariance columns can say no: bicubic upsampling is exact for 90-degree turns and flips only."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 24, 24, generator=g)]
    eq = sr_benchmark.equivariance(sr_benchmark.Bicubic(2), images, 2, torch.device("cpu"))
    assert eq["eq_quarter"] < 1e-10 and eq["eq_flip"] < 1e-10
    assert eq["eq_rot8"] > 1e-4  # 45 degrees: interpolation, not a permutation
    net = build_model("plain", plain_width=4, depth=1, kernel_size=3, scale=2, layout="authors")
    eq_net = sr_benchmark.equivariance(net, images, 2, torch.device("cpu"))
    assert eq_net["eq_res_quarter"] > 1e-4  # an untrained plain net is not equivariant, in detail or in whole
