"""The model-agnostic equivariance metric on maps whose error is known."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.equivariance import COLUMNS, disk_mask, equivariance_error, summarize
from analysis.models import build_model
from symmetry.errors import DataError, UsageError

EXACT = 1e-12
GAUSS_SIGMA = 1.2
GAUSS_SIZE = 7


class GaussianBlur(nn.Module):
    """Depthwise convolution with an isotropic Gaussian, zero padding: commutes with quarter turns and flips."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        r = torch.arange(GAUSS_SIZE, dtype=torch.float64) - GAUSS_SIZE // 2
        g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * GAUSS_SIGMA**2))
        self.register_buffer("kernel", (g / g.sum()).expand(channels, 1, -1, -1).clone())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel.to(x), padding=GAUSS_SIZE // 2, groups=self.channels)


class AddFixed(nn.Module):
    """``f(x) = up(x) + c``: a fixed, non-symmetric offset (optionally after nearest x``scale`` upsampling)."""

    def __init__(self, offset: torch.Tensor, scale: int = 1) -> None:
        super().__init__()
        self.register_buffer("offset", offset)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return x + self.offset


def smooth_images(n: int = 3, size: int = 24, seed: int = 0) -> torch.Tensor:
    """Sums of Gaussian blobs near the centre: smooth, and negligible at the border."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    out = torch.zeros(n, 3, size, size, dtype=torch.float64)
    for i in range(n):
        for _ in range(4):
            cy, cx = (torch.rand(2, generator=g, dtype=torch.float64) - 0.5) * size / 3
            width = size / 10 * (1 + torch.rand(1, generator=g, dtype=torch.float64))
            amp = torch.randn(3, 1, 1, generator=g, dtype=torch.float64)
            out[i] += amp * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width**2))
    return out


def test_blur_is_exactly_equivariant_to_quarter_turns_and_flips():
    images = torch.randn(3, 3, 20, 20, dtype=torch.float64)
    for group in ("rot4", "dih4"):
        df = equivariance_error(GaussianBlur(), images, group)
        assert list(df.columns) == COLUMNS
        assert len(df) == (4 if group == "rot4" else 8)
        assert (df["n_images"] == 3).all()
        assert df["equivariance_error"].max() < EXACT


def test_blur_is_approximately_equivariant_to_45_degrees():
    df = equivariance_error(GaussianBlur(), smooth_images(), "rot8")
    exact = df[df["is_grid_exact"]]
    approx = df[~df["is_grid_exact"]]
    assert exact["equivariance_error"].max() < EXACT
    assert 0 < approx["equivariance_error"].min() and approx["equivariance_error"].max() < 1e-3
    s = summarize(df)
    assert s["worst"] == approx["equivariance_error"].max()
    assert s["grid_exact_worst"] < EXACT
    assert math.isclose(s["mean"], df["equivariance_error"][1:].mean())


def _disk(h: int, w: int, radius: float) -> torch.Tensor:
    rows = torch.arange(h, dtype=torch.float64)[:, None] - (h - 1) / 2
    cols = torch.arange(w, dtype=torch.float64)[None, :] - (w - 1) / 2
    return rows**2 + cols**2 <= radius**2


@pytest.mark.parametrize("scale", [1, 2])
def test_known_value_for_a_fixed_offset(scale):
    """f(x) = up(x) + c: f(pi x) - pi f(x) = c - pi c, so e_A = ||c - pi c||^2 / ||pi up(x) + pi c||^2 on the disk."""
    torch.manual_seed(3)
    size, margin = 16, 1.0
    images = torch.randn(4, 3, size, size, dtype=torch.float64)
    offset = torch.randn(3, size * scale, size * scale, dtype=torch.float64)
    df = equivariance_error(AddFixed(offset, scale), images, "rot4", margin=margin)
    disk = _disk(size * scale, size * scale, scale * (size / 2 - margin))
    for k in range(4):
        up = F.interpolate(images, scale_factor=scale, mode="nearest") if scale > 1 else images
        rc = torch.rot90(offset, k, dims=(-2, -1))
        ref = torch.rot90(up, k, dims=(-2, -1)) + rc
        num = ((offset - rc) ** 2 * disk).sum()
        expected = (num / (ref**2 * disk).flatten(1).sum(1)).mean().item()
        got = df.loc[k, "equivariance_error"]
        assert df.loc[k, "angle"] == 90.0 * k
        assert math.isclose(got, expected, rel_tol=1e-12), (k, got, expected)
    assert df.loc[0, "equivariance_error"] == 0.0


def test_equivariant_network_through_the_metric():
    torch.manual_seed(0)
    model = build_model("equivariant", group="rot4", scale=2, width=4, depth=2).double()
    model.train()
    images = [torch.randn(3, 14, 14, dtype=torch.float64), torch.randn(2, 3, 10, 12, dtype=torch.float64)]
    df = equivariance_error(model, images, "rot4", batch_size=2)
    assert model.training  # the training flag is restored
    assert (df["n_images"] == 3).all()
    assert df["equivariance_error"].max() < EXACT
    plain = build_model("plain", scale=2, width=4, depth=2).double()
    assert summarize(equivariance_error(plain, images, "rot4"))["worst"] > 1e-3


class ShapeRecorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x * 2.0


def test_mesh_batching_and_dtype():
    rec = ShapeRecorder()
    images = torch.rand(5, 1, 32, 32)
    df = equivariance_error(rec, images, "flip", mesh=2.0, batch_size=2)
    assert rec.shapes[0] == (2, 1, 16, 16)  # brought to mesh 2 and batched by 2
    assert sorted({s[0] for s in rec.shapes}) == [1, 2]
    assert df["equivariance_error"].max() < EXACT  # f(x) = 2x is equivariant
    assert summarize(df)["worst_element"] == "flip"


def test_errors_are_reported():
    with pytest.raises(UsageError):
        equivariance_error(GaussianBlur(), torch.rand(1, 3, 8, 8), "rot4", interpolation="lanczos")
    with pytest.raises(DataError):
        equivariance_error(GaussianBlur(), torch.rand(3, 8), "rot4")
    with pytest.raises(DataError):
        equivariance_error(GaussianBlur(), torch.rand(1, 3, 4, 4), "rot4", margin=3)
    with pytest.raises(DataError):
        equivariance_error(GaussianBlur(), [], "rot4")


def test_disk_mask_is_centred_and_symmetric():
    m = disk_mask(9, 12, 4.0)
    assert torch.equal(m, m.flip(0)) and torch.equal(m, m.flip(1))
    assert torch.equal(disk_mask(10, 10, 4.5), torch.rot90(disk_mask(10, 10, 4.5)))
    empty = summarize(pd.DataFrame(columns=COLUMNS))  # only the identity: nothing to be non-equivariant under
    assert (empty["worst"], empty["mean"], empty["worst_element"]) == (0.0, 0.0, "e")
    assert math.isnan(empty["grid_exact_worst"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda():
    model = GaussianBlur().cuda()
    df = equivariance_error(model, torch.randn(2, 3, 16, 16, dtype=torch.float64), "rot4")
    assert df["equivariance_error"].max() < EXACT


@pytest.mark.parametrize("scale", [1, 2])
def test_learned_part_normalisation_exposes_a_plain_residual_net(scale):
    """A plain residual net reads nearly equivariant relative to ||f(x)|| (the skip dominates) and clearly
    not relative to its learned part ||f(x) - skip(x)||; an equivariant net is exact under both."""
    torch.manual_seed(0)
    images = torch.rand(2, 3, 12, 12, dtype=torch.float64)
    plain = build_model("plain", scale=scale, width=4, depth=2).double()
    df = equivariance_error(plain, images, "rot4", normalisation="both")
    assert list(df.columns) == COLUMNS and set(df["normalisation"]) == {"output", "learned"}
    out, learned = summarize(df, "output"), summarize(df, "learned")
    assert learned["normalisation"] == "learned" and learned["worst"] > 1e-2
    assert out["worst"] < learned["worst"] / 10
    assert (df[df["normalisation"] == "learned"]["equivariance_error"].to_numpy() > 0).sum() == 3
    only = equivariance_error(plain, images, "rot4", normalisation="learned", skip=plain.skip)
    assert (only["equivariance_error"].to_numpy() == df[df["normalisation"] == "learned"]["equivariance_error"]).all()
    eq = build_model("equivariant", group="rot4", scale=scale, width=4, depth=2).double()
    assert equivariance_error(eq, images, "rot4", normalisation="both")["equivariance_error"].max() < EXACT


def test_learned_part_normalisation_needs_a_skip():
    with pytest.raises(UsageError, match="skip"):
        equivariance_error(GaussianBlur(), torch.rand(1, 3, 8, 8), "rot4", normalisation="learned")
    with pytest.raises(UsageError, match="normalisation"):
        equivariance_error(GaussianBlur(), torch.rand(1, 3, 8, 8), "rot4", normalisation="input")
    df = equivariance_error(
        GaussianBlur(), torch.rand(1, 3, 8, 8), "rot4", normalisation="learned", skip=lambda x: 0 * x
    )
    assert (df["normalisation"] == "learned").all()


class Residual(nn.Module):
    """``f(x) = g(x) + skip(x)`` with both parts given: a constructed residual net whose parts' errors are known."""

    def __init__(self, learned: nn.Module, skip: nn.Module) -> None:
        super().__init__()
        self.learned, self.skip_map = learned, skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.learned(x) + self.skip_map(x)

    def skip(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_map(x)


class Shifted(nn.Module):
    """``x + 0.3 * (x shifted one pixel right)``: a fixed map that is not equivariant to turns or flips."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.3 * torch.roll(x, 1, dims=-1)


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _rows(df: pd.DataFrame, name: str) -> pd.Series:
    return df[df["normalisation"] == name].set_index("element")["equivariance_error"]


def test_learned_part_of_an_equivariant_net_with_a_non_equivariant_skip_reads_zero():
    """g exactly equivariant, skip not: ``learned`` ~0, ``skip`` the skip's own error, ``output`` in between.

    Negative control: the pre-fix formula (the whole output's error over ||g||) reads the skip's error
    rescaled, far from zero, on the same model."""
    images = smooth_images()
    model = Residual(GaussianBlur(), Shifted()).double()
    df = equivariance_error(model, images, "rot4", disk=True, normalisation="all")
    learned, skip, output = _rows(df, "learned"), _rows(df, "skip"), _rows(df, "output")
    assert learned.max() < EXACT
    alone = equivariance_error(Shifted(), images, "rot4", normalisation="output").set_index("element")
    assert torch.allclose(torch.tensor(skip.to_numpy()), torch.tensor(alone["equivariance_error"].to_numpy()))
    assert skip.drop("e").min() > 1e-3 and output.drop("e").min() > 1e-3
    # the old, inconsistent normalisation: ||f(pi x) - pi f(x)||^2 / ||pi g(x)||^2
    x = images[:1]
    y, g = model(x), GaussianBlur().double()(x)
    yt = model(torch.rot90(x, 1, (-2, -1)))
    old = (yt - torch.rot90(y, 1, (-2, -1))).square().sum() / g.square().sum()
    assert old > 1e-2


def test_learned_part_of_a_non_equivariant_net_with_identity_skip_is_the_parts_error():
    """g not equivariant, skip the identity: ``learned`` equals g's own output-normalised error."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False).double()
    images = smooth_images()
    df = equivariance_error(Residual(conv, Identity()), images, "dih4", normalisation="all")
    alone = equivariance_error(conv, images, "dih4", normalisation="output").set_index("element")
    learned = _rows(df, "learned")
    assert learned.drop("e").min() > 1e-3
    assert torch.allclose(
        torch.tensor(learned.to_numpy()), torch.tensor(alone["equivariance_error"].to_numpy()), rtol=1e-10, atol=0
    )
    assert _rows(df, "skip").max() < EXACT  # the identity is exactly equivariant


def test_untrained_equivariant_sr_net_reads_its_learned_part_not_the_bicubic_skip():
    """An untrained rot8 SR net: the learned part is exact at the grid elements (< 1e-3, here ~0); the bicubic
    skip has its own error at 45 degrees, reported in its own row (it read 11 before the metric was fixed)."""
    torch.manual_seed(0)
    model = build_model("equivariant", group="rot8", scale=2, width=2, depth=1).double()
    df = equivariance_error(model, smooth_images(2, 24), "rot8", normalisation="all")
    learned, skip = df[df["normalisation"] == "learned"], _rows(df, "skip")
    assert learned[learned["is_grid_exact"]]["equivariance_error"].max() < 1e-3
    assert learned["equivariance_error"].max() < 0.1  # interpolation error of g alone at 45 degrees
    assert skip["rot45"] > 1e-6
