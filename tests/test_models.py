"""Restoration networks: shapes, parameter matching, exact equivariance, SA-Conv, filter caching."""

from __future__ import annotations

import importlib.util
import math
import sys
import warnings

import pytest
import torch

from analysis.basis import BicubicBasis, FourierBasis, cubic_kernel, kernel_grid, subpixel_grid
from analysis.equivariance import equivariance_error
from analysis.layers import IDENTITY_PARAMETERS
from analysis.models import (
    MODEL_KINDS,
    build_model,
    conjugate_element,
    conjugate_equivariance_error,
    count_parameters,
    init_sa_from_tl,
    matched_plain_width,
    plain_parameter_count,
    transform_spread,
    upsample_stages,
)
from symmetry.errors import UsageError
from symmetry.groups import Group, get_group
from symmetry.transforms import deformation_matrix, transform_image

SMALL = dict(width=4, depth=2)
QUARTER_TURNS = (1, 2, 3)
EXACT_TOL = 1e-5
PLAIN_MIN_ERROR = 1e-4  # above EXACT_TOL; small because the identity/bicubic skip is itself equivariant


def rel_rot90_error(model: torch.nn.Module, x: torch.Tensor, k: int) -> float:
    """||f(rot90^k x) - rot90^k f(x)||^2 / ||f(x)||^2."""
    with torch.no_grad():
        a = model(torch.rot90(x, k, dims=(-2, -1)))
        b = torch.rot90(model(x), k, dims=(-2, -1))
    return ((a - b).square().sum() / b.square().sum()).item()


def adam_steps(model: torch.nn.Module, x: torch.Tensor, steps: int = 3) -> None:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    target = torch.randn_like(model(x))
    for _ in range(steps):
        opt.zero_grad()
        loss = (model(x) - target).square().mean()
        loss.backward()
        opt.step()


@pytest.fixture
def image64() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(2, 3, 12, 12, dtype=torch.float64)


# --- factory -----------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 3])
def test_plain_shapes(scale):
    model = build_model("plain", scale=scale, **SMALL)
    x = torch.randn(2, 3, 10, 14)
    assert model(x).shape == (2, 3, 10 * scale, 14 * scale)


def test_unknown_kind_and_options():
    x = torch.randn(1, 1, 12, 12)
    for kind in MODEL_KINDS:  # every listed kind builds and maps an image to an image of its size
        if kind == "e2cnn" and importlib.util.find_spec("e2cnn") is None:
            continue
        model = build_model(kind, group="rot4", in_channels=1, width=2, depth=1, kernel_size=3)
        assert model(x).shape == x.shape, kind
    with pytest.raises(UsageError, match="choose one of " + ", ".join(MODEL_KINDS)):
        build_model("resnet")
    with pytest.raises(UsageError):
        build_model("equivariant", plain_width=3)
    with pytest.raises(UsageError):
        build_model("equivariant", group="hex4")
    with pytest.raises(UsageError):
        build_model("equivariant", kernel_size=4)


@pytest.mark.parametrize("group", ["rot4", "rot8"])
@pytest.mark.parametrize("scale", [1, 2])
def test_plain_matches_equivariant_parameter_count(group, scale):
    eq = count_parameters(build_model("equivariant", group=group, scale=scale))
    plain = build_model("plain", group=group, scale=scale)
    n = count_parameters(plain)
    assert abs(n - eq) / eq < 0.10
    assert plain.width == matched_plain_width(group, 16, 4, 5, scale=scale)
    assert n == plain_parameter_count(plain.width, scale=scale, in_channels=3, depth=4, kernel_size=5)
    assert build_model("plain", plain_width=7).width == 7


# --- basis -------------------------------------------------------------------------------


def test_basis_independent_and_rotation_exact():
    phi = FourierBasis(5)
    grid = kernel_grid(5)
    b = phi(grid)
    assert b.shape == (25, phi.size) and phi.size == 13
    assert torch.linalg.matrix_rank(b) == phi.size
    assert torch.allclose(b.square().sum(0), torch.ones(phi.size, dtype=torch.float64))
    quarter = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # R(90)^-1
    rotated = phi(grid @ quarter.T).reshape(5, 5, -1)
    # phi(R^-1 delta) on the grid is an exact permutation: the filter rotated by 90 degrees
    assert torch.equal(rotated, torch.rot90(b.reshape(5, 5, -1), 1, dims=(0, 1)))
    sub = subpixel_grid(3, 2)
    assert sub.shape == (2, 2, 3, 3, 2)
    pts = {tuple(p.tolist()) for p in sub.reshape(-1, 2)}
    assert pts == {(-p[1], p[0]) for p in pts}  # closed under quarter turns


# --- equivariance ------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["rot4", "rot8"])
@pytest.mark.parametrize("scale", [1, 2])
def test_equivariant_exact_for_quarter_turns(group, scale, image64):
    torch.manual_seed(1)
    model = build_model("equivariant", group=group, scale=scale, **SMALL).double()
    model.eval()
    for k in QUARTER_TURNS:
        assert rel_rot90_error(model, image64, k) < EXACT_TOL
    adam_steps(model, image64)
    model.eval()
    for k in QUARTER_TURNS:
        assert rel_rot90_error(model, image64, k) < EXACT_TOL


@pytest.mark.parametrize("scale", [3, 4])
def test_equivariant_upsampler_other_scales(scale):
    torch.manual_seed(1)
    x = torch.randn(1, 3, 8, 10, dtype=torch.float64)
    model = build_model("equivariant", group="rot4", scale=scale, width=2, depth=1).double().eval()
    assert model(x).shape == (1, 3, 8 * scale, 10 * scale)
    for k in QUARTER_TURNS:
        assert rel_rot90_error(model, x, k) < EXACT_TOL


def test_cached_filters_work_after_inference_mode(image64):
    model = build_model("equivariant", group="rot4", **SMALL).double().eval()
    with torch.inference_mode():
        expected = model(image64)
    x = image64.clone().requires_grad_(True)
    out = model(x)  # reuses the filters cached inside inference mode, with autograd on the input
    out.sum().backward()
    assert torch.allclose(out, expected) and x.grad is not None


@pytest.mark.parametrize("scale", [1, 2])
def test_plain_is_not_equivariant(scale, image64):
    torch.manual_seed(1)
    model = build_model("plain", scale=scale, **SMALL).double().eval()
    assert min(rel_rot90_error(model, image64, k) for k in QUARTER_TURNS) > PLAIN_MIN_ERROR


@pytest.mark.parametrize("scale", [1, 2])
def test_e2cnn_reference_is_equivariant(scale, image64):
    pytest.importorskip("e2cnn")
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("e2cnn", group="rot4", scale=scale, **SMALL).double().eval()
        assert model(image64).shape == (2, 3, 12 * scale, 12 * scale)
        for k in QUARTER_TURNS:
            assert rel_rot90_error(model, image64, k) < EXACT_TOL


def test_e2cnn_missing_is_a_usage_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "e2cnn", None)  # makes `import e2cnn` raise ImportError
    with pytest.raises(UsageError, match="install the e2cnn extra"):
        build_model("e2cnn", **SMALL)


def test_sa_global_equivariant_when_hypernetwork_outputs_zero(image64):
    torch.manual_seed(1)
    model = build_model("sa-global", group="rot4", scale=2, **SMALL).double().eval()
    for k in QUARTER_TURNS:
        assert rel_rot90_error(model, image64, k) < EXACT_TOL


# --- sample-adaptive ---------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2])
def test_sa_global_zero_hypernetwork_equals_equivariant(scale, image64):
    torch.manual_seed(2)
    eq = build_model("equivariant", group="rot8", scale=scale, **SMALL).double()
    sa = build_model("sa-global", group="rot8", scale=scale, **SMALL).double()
    missing = sa.load_equivariant_state(eq.state_dict())
    assert missing and all(k.startswith("hyper.") for k in missing)
    params = sa.predict_transform(image64)
    assert params.shape == (2, 3)
    assert torch.equal(params, torch.tensor([[0.0, 1.0, 1.0]] * 2, dtype=torch.float64))
    for mode in (True, False):
        eq.train(mode)
        sa.train(mode)
        with torch.no_grad():
            assert (sa(image64) - eq(image64)).abs().max() < 1e-10

    with torch.no_grad():
        sa.hyper.out.weight.normal_(0.0, 0.5)
        sa.hyper.out.bias.copy_(torch.tensor([0.3, 0.2, -0.1]))
        batched = sa(image64)
        single = torch.cat([sa(image64[i : i + 1]) for i in range(image64.shape[0])])
        assert (batched - eq(image64)).abs().max() > 1e-3
        assert (batched - single).abs().max() < 1e-10
        # an explicit transform overrides the (now non-zero) hypernetwork: the identity gives back `equivariant`,
        # the hypernetwork's own prediction gives back the default forward
        assert (sa(image64, transform=torch.tensor([0.0, 1.0, 1.0])) - eq(image64)).abs().max() < 1e-10
        assert (sa(image64, transform=sa.predict_transform(image64)) - batched).abs().max() < 1e-10
    assert not torch.allclose(sa.predict_transform(image64), params)


def test_sa_global_transform_override_is_a_per_sample_deformation(image64):
    """Deforming by a quarter turn is a relabelling of the rot4 group axis, so the output does not change;
    a stretch does change it, per sample."""
    torch.manual_seed(3)
    sa = build_model("sa-global", group="rot4", **SMALL).double().eval()
    identity = torch.tensor([0.0, 1.0, 1.0])
    stretch = torch.tensor([[0.0, 1.0, 1.0], [0.4, 1.3, 1 / 1.3]], dtype=torch.float64)
    with torch.no_grad():
        base = sa(image64, transform=identity)
        quarter = sa(image64, transform=torch.tensor([math.pi / 2, 1.0, 1.0], dtype=torch.float64))
        mixed = sa(image64, transform=stretch)
    assert (quarter - base).abs().max() < 1e-10
    assert (mixed[0] - base[0]).abs().max() < 1e-10 and (mixed[1] - base[1]).abs().max() > 1e-4


def test_sa_global_rejects_foreign_checkpoint():
    sa = build_model("sa-global", group="rot4", **SMALL)
    other = build_model("equivariant", group="rot4", width=4, depth=3)
    with pytest.raises(UsageError):
        sa.load_equivariant_state(other.state_dict())


@pytest.mark.parametrize("kind", ["sa", "sa-global"])
def test_sa_hypernetwork_gets_gradients(kind, image64):
    sa = build_model(kind, group="rot4", **SMALL).double()
    with torch.no_grad():
        sa.hyper.out.weight.normal_(0.0, 0.1)
    sa(image64).square().mean().backward()
    assert sa.hyper.out.weight.grad.abs().sum() > 0
    assert sa.hyper.features[0].weight.grad.abs().sum() > 0


# --- buffers and caching -----------------------------------------------------------------


def test_basis_is_a_float64_accurate_buffer():
    model = build_model("equivariant", group="rot8", **SMALL)
    names = {n for n, _ in model.named_buffers()}
    assert "head.basis" in names and "head.basis" not in model.state_dict()
    f32 = model.body[0].conv1.basis.clone()
    model.double()
    f64 = model.body[0].conv1.basis
    assert f64.dtype == torch.float64
    assert (f64.float() - f32).abs().max() < 1e-6 and (f64 - f32.double()).abs().max() > 0


def test_eval_mode_caches_filters(image64):
    model = build_model("equivariant", group="rot4", **SMALL).double()
    layer = model.body[0].conv1
    model.eval()
    with torch.no_grad():
        model(image64)
        first = layer.filters()
        model(image64)
        assert layer.filters() is first
        layer.weight.add_(1.0)  # a parameter change invalidates the cache
        second = layer.filters()
        assert second is not first and not torch.equal(second, first)
    model.train()
    assert layer._cache is None
    built = layer.filters()
    assert built.requires_grad and layer.filters() is not built  # rebuilt every call in training
    model.eval()
    assert layer.filters() is not second


@pytest.mark.parametrize("kind", ["plain", "equivariant", "tl", "sa", "sa-global"])
def test_default_models_train(kind):
    model = build_model(kind, scale=2)
    x = torch.randn(1, 3, 16, 16)
    model(x).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


# --- tl, sa (the authors' design), groups, bases, layouts ---------------------------------

GRID_TOL = 1e-6  # float32, the project's squared relative error (analysis.equivariance)
TINY = dict(width=2, depth=1)


def grid_exact_errors(model: torch.nn.Module, x: torch.Tensor, group: str) -> dict[str, float]:
    """Squared relative equivariance error of every grid-exact element, normalised by the learned part."""
    g = get_group(group)
    exact = Group(f"{g.name} (grid-exact)", tuple(el for el in g if el.is_grid_exact))
    df = equivariance_error(model, x, exact, disk=False, normalisation="learned")
    return dict(zip(df["element"], df["equivariance_error"], strict=True))


def freeze_deformation(model: torch.nn.Module) -> None:
    for name, p in model.named_parameters():
        if name.endswith(("theta0", "log_scale", "inv_scale", "tied_deformation")) or name.startswith("hyper."):
            p.requires_grad_(False)


@pytest.mark.parametrize("basis", ["fourier", "bicubic"])
@pytest.mark.parametrize("group", ["rot8", "dih4"])
@pytest.mark.parametrize("kind", ["equivariant", "tl", "sa"])
def test_grid_exact_equivariance_in_float32(kind, group, basis):
    """Quarter turns (and flips for dih4) at initialisation and after optimiser steps on random data.

    ``tl``/``sa`` train with their deformation (and hypernetwork) frozen here: a learned ``D`` per layer
    breaks every element but the half turn (one shared ``D`` would give ``D A D^-1`` instead of ``A``:
    test_tied_tl_is_equivariant_to_the_conjugates_and_a_per_layer_spread_is_not).
    Whatever ``tl`` learns, the half turn commutes with every ``D`` and stays exact; ``sa``'s
    per-sample ``D`` depends on the input, so it keeps no exact symmetry once its hypernetwork learns.
    """
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 10)
    model = build_model(kind, group=group, basis=basis, **TINY)
    assert max(grid_exact_errors(model, x, group).values()) < GRID_TOL
    if kind == "tl":
        free = build_model(kind, group=group, basis=basis, **TINY)
        adam_steps(free, x, steps=2)
        assert grid_exact_errors(free, x, group)["rot180"] < GRID_TOL
    if kind != "equivariant":
        freeze_deformation(model)
    adam_steps(model, x, steps=2)
    assert max(grid_exact_errors(model, x, group).values()) < GRID_TOL


@pytest.mark.parametrize("basis", ["fourier", "bicubic"])
def test_sr_and_flip_groups_are_exact(basis):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 10, 12)
    for group in ("dih4", "flip"):
        model = build_model("equivariant", group=group, basis=basis, scale=2, **SMALL)
        assert max(grid_exact_errors(model, x, group).values()) < GRID_TOL


@pytest.mark.parametrize("basis", ["fourier", "bicubic"])
@pytest.mark.parametrize("scale", [1, 2])
def test_sa_with_zero_hypernetwork_equals_tl(scale, basis, image64):
    torch.manual_seed(4)
    tl = build_model("tl", group="dih4", basis=basis, scale=scale, **TINY).double()
    adam_steps(tl, image64)  # the per-layer deformations move away from (0, 1, 1)
    transforms = tl.layer_transforms()
    assert transforms.shape == (2 * TINY["depth"] + 3 + len(upsample_stages(scale)), 3)  # every basis layer
    assert (transforms - torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64)).abs().max() > 1e-3
    sa = build_model("sa", group="dih4", basis=basis, scale=scale, **TINY).double()
    missing = init_sa_from_tl(sa, tl.state_dict(), kind="tl", group="dih4", basis=basis)
    assert missing and all(k.startswith("hyper.") for k in missing)
    assert torch.equal(sa.layer_transforms(), transforms)
    for mode in (True, False):
        tl.train(mode)
        sa.train(mode)
        with torch.no_grad():
            assert (sa(image64) - tl(image64)).abs().max() < 1e-12
    with torch.no_grad():  # a non-zero hypernetwork adapts per sample
        sa.hyper.out.bias.copy_(torch.tensor([0.3, 0.2, -0.1]))
        assert (sa(image64) - tl(image64)).abs().max() > 1e-4
        # a transform given to forward is added to every layer's own values, as the hypernetwork's offsets are
        offsets = sa.predict_transform(image64)
        assert (sa(image64, transform=offsets) - sa(image64)).abs().max() < 1e-12
        assert (sa(image64, transform=torch.tensor([0.0, 1.0, 1.0])) - tl(image64)).abs().max() < 1e-12


def test_sa_with_zero_hypernetwork_equals_tl_in_float32():
    torch.manual_seed(5)
    x = torch.randn(2, 3, 12, 12)
    tl = build_model("tl", group="rot8", basis="bicubic", **SMALL)
    adam_steps(tl, x)
    sa = build_model("sa", group="rot8", basis="bicubic", **SMALL)
    init_sa_from_tl(sa, tl.state_dict(), kind="tl", group="rot8", basis="bicubic")
    tl.eval()
    sa.eval()
    with torch.no_grad():
        a, b = sa(x), tl(x)
    assert ((a - b).norm() / b.norm()).item() < 1e-6


def test_init_sa_from_tl_refuses_other_runs_in_one_line():
    sa = build_model("sa", group="rot8", **SMALL)
    tl_state = build_model("tl", group="rot8", **SMALL).state_dict()
    bad = [
        (sa, tl_state, dict(kind="equivariant", group="rot8", basis="fourier"), "needs a 'tl' run"),
        (sa, tl_state, dict(kind="tl", group="dih4", basis="fourier"), "group"),
        (sa, tl_state, dict(kind="tl", group="rot8", basis="bicubic"), "basis"),
        (
            sa,
            build_model("equivariant", group="rot8", **SMALL).state_dict(),
            dict(kind="tl", group="rot8", basis="fourier"),
            "missing",
        ),
        (
            sa,
            build_model("tl", group="rot8", width=4, depth=3).state_dict(),
            dict(kind="tl", group="rot8", basis="fourier"),
            "unexpected",
        ),
        (
            sa,
            build_model("tl", group="rot8", width=5, depth=2).state_dict(),
            dict(kind="tl", group="rot8", basis="fourier"),
            "size",
        ),
        (
            build_model("tl", group="rot8", **SMALL),
            tl_state,
            dict(kind="tl", group="rot8", basis="fourier"),
            "'sa' model",
        ),
    ]
    for model, state, source, match in bad:
        with pytest.raises(UsageError, match=match) as err:
            init_sa_from_tl(model, state, **source)
        assert "\n" not in str(err.value)


def test_fixed_deformation_conjugates_the_symmetry():
    """With a fixed D, filters phi(A^-1 D^-1 delta) make the network equivariant to D A D^-1 (not to A).

    On the grid this holds exactly whenever D A D^-1 is a signed permutation matrix
    (:func:`analysis.models.conjugate_element`); the elements of dih4 outside D G D^-1 are clearly
    broken by the anisotropic deformations below (e.g. R(45 deg) diag(1.3, 1/1.3) keeps the diagonal
    reflections and the half turn, loses the axis flips and quarter turns).
    """
    torch.manual_seed(6)
    x = torch.randn(1, 1, 10, 10, dtype=torch.float64)
    group = get_group("dih4")
    cases = {  # (theta0, cx, cy): the grid-exact conjugates they must give
        (math.pi / 4, 1.3, 1 / 1.3): {"flip": "rot90*flip", "flipud": "rot270*flip", "rot180": "rot180"},
        (0.0, 1.3, 0.8): {"flip": "flip", "flipud": "flipud", "rot180": "rot180"},
        (0.3, 1.2, 1.2): {"rot90": "rot90", "rot180": "rot180", "rot270": "rot270"},
    }
    for kind in ("tl", "sa-global"):
        model = build_model(kind, group="dih4", in_channels=1, **TINY).double().eval()
        for params, expected in cases.items():
            d = deformation_matrix(*params)
            transform = torch.tensor(params, dtype=torch.float64)

            def f(img, transform=transform, model=model):
                with torch.no_grad():
                    return model(img, transform=transform)

            y = f(x)
            learned = (y - x).square().sum()
            exact = {a.name: conjugate_element(d, a) for a in group if not a.is_identity}
            assert {a: c.name for a, c in exact.items() if c is not None} == expected
            for a, conj in exact.items():
                if conj is not None:
                    err = (f(transform_image(x, conj)[0]) - transform_image(y, conj)[0]).square().sum() / learned
                    assert err < 1e-20, (kind, params, a, conj)
            if params[1] != params[2]:  # anisotropic: elements of dih4 outside D G D^-1 are no longer symmetries
                kept = {c.name for c in exact.values() if c is not None}
                broken = [a for a in exact if a not in kept]
                assert len(broken) == 4
                for a in broken:
                    el = group.element(a)
                    err = (f(transform_image(x, el)[0]) - transform_image(y, el)[0]).square().sum() / learned
                    assert err > 1e-4, (kind, params, a)


@pytest.mark.parametrize("basis", ["fourier", "bicubic"])
def test_authors_layout_and_channel_matched_plain(basis):
    torch.manual_seed(7)
    x = torch.randn(1, 3, 10, 10)
    model = build_model("equivariant", group="rot8", basis=basis, tail="plain", scale=2, **SMALL)
    assert model(x).shape == (1, 3, 20, 20)
    assert isinstance(model.tail, torch.nn.Conv2d) and model.tail.in_channels == SMALL["width"] * 8
    assert all(isinstance(up.conv, torch.nn.Conv2d) for up in model.upsampler)
    assert max(grid_exact_errors(model, x, "rot8").values()) > 1e-3  # an ordinary tail is not equivariant
    plain = build_model("plain", group="rot8", match="channels", **SMALL)
    assert plain.width == SMALL["width"] * 8
    matched = build_model("plain", group="rot8", basis=basis, tail="plain", **SMALL)
    target = count_parameters(build_model("equivariant", group="rot8", basis=basis, tail="plain", **SMALL))
    assert abs(count_parameters(matched) - target) / target < 0.15
    with pytest.raises(UsageError, match="plain model only"):
        build_model("equivariant", match="channels")
    for bad in (dict(tail="linear"), dict(basis="wavelet"), dict(match="flops")):
        with pytest.raises(UsageError):
            build_model("tl", **bad)


@pytest.mark.parametrize("scale", [1, 2])
def test_skip_is_the_map_the_residual_is_added_to(scale):
    torch.manual_seed(8)
    x = torch.randn(2, 3, 8, 8)
    for kind in ("plain", "equivariant", "sa"):
        model = build_model(kind, scale=scale, **SMALL).eval()
        with torch.no_grad():
            for p in model.tail.parameters():
                p.zero_()
            assert torch.equal(model(x), model.skip(x))
    assert torch.equal(model.skip(x), x) if scale == 1 else model.skip(x).shape == (2, 3, 16, 16)


# --- the authors' SA-Conv pieces (variant="authors") against their code's shapes and formulas -------------------


def authors_hypernetwork_parameters(first: int = 16, features: int = 32, hidden: int = 16) -> int:
    """Trainable parameters of the authors' ``HyperNetwork()`` from the layer shapes in their ``HyperNet.py``.

    Conv2d(1, 16, 3), Conv2d(16, 32, 3, stride 2), Conv2d(32, 32, 3, stride 2), Conv2d(32, 32, 3) twice, each with a
    bias and a BatchNorm2d (weight and bias per channel); Linear(32, 16), Linear(16, 8), Linear(8, 3).
    """
    convs = [(1, first), (first, features), (features, features), (features, features), (features, features)]
    n = sum(i * o * 9 + o + 2 * o for i, o in convs)
    linears = [(features, hidden), (hidden, hidden // 2), (hidden // 2, 3)]
    return n + sum(i * o + o for i, o in linears)


def test_authors_hypernetwork_has_their_parameter_count_and_layers():
    assert authors_hypernetwork_parameters() == 33523
    for in_channels in (1, 3):
        sa = build_model("sa", group="rot8", in_channels=in_channels, **SMALL)
        assert sa.variant == "authors"
        assert count_parameters(sa.hyper) == 33523
        tl = build_model("tl", group="rot8", in_channels=in_channels, **SMALL)
        assert count_parameters(sa) == count_parameters(tl) + 33523  # the hypernetwork is all sa adds
    convs = [m for m in sa.hyper.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 1, 1] and all(c.padding == (0, 0) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in sa.hyper.modules()) == 5
    assert sum(isinstance(m, torch.nn.Linear) for m in sa.hyper.modules()) == 3
    # negative control: the bounded (earlier) hypernetwork is another network
    bounded = build_model("sa", group="rot8", variant="bounded", **SMALL)
    assert count_parameters(bounded.hyper) != 33523
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bounded.hyper.modules())
    with pytest.raises(UsageError, match="variant"):
        build_model("sa", variant="theirs")
    with pytest.raises(UsageError, match="unexpected options"):
        build_model("equivariant", variant="authors")


def test_authors_hypernetwork_pools_features_against_the_gray_image():
    """Gray at 0-255 (Rec. 601), features pooled against the image averaged down to their size, offsets unbounded."""
    torch.manual_seed(11)
    sa = build_model("sa", group="rot8", in_channels=3, **SMALL).double().eval()
    hyper = sa.hyper
    x = torch.rand(2, 3, 40, 36, dtype=torch.float64)
    gray = 255 * (0.2989 * x[:, 0] + 0.5870 * x[:, 1] + 0.1140 * x[:, 2])[:, None]
    feat = hyper.features(gray)
    down = torch.nn.functional.adaptive_avg_pool2d(gray, feat.shape[-2:])
    pooled = (feat * down).sum((-2, -1)) / feat.shape[-2:].numel()
    with torch.no_grad():
        hyper.out.weight.normal_(0, 1.0)
        hyper.out.bias.copy_(torch.tensor([0.5, 3.0, -2.0]))
        expected = hyper.out(hyper.mlp(pooled))
        assert torch.allclose(hyper.offsets(x), expected, rtol=1e-6, atol=1e-9)  # float32 Rec. 601 weights
        assert hyper.offsets(x).abs().max() > 1.5  # no tanh bound
        # negative control: pooling against the unscaled image gives other offsets
        wrong = hyper.out(hyper.mlp((feat * down / 255).sum((-2, -1)) / feat.shape[-2:].numel()))
        assert (wrong - expected).abs().max() > 1e-3
    small = torch.rand(1, 3, 12, 12)  # smaller than the unpadded network reads: edge-padded, works in training too
    sa_small = build_model("sa", group="rot4", in_channels=3, width=2, depth=1)
    assert sa_small(small).shape == small.shape


def test_authors_offsets_are_added_to_every_layers_theta0_cx_cy():
    torch.manual_seed(12)
    x = torch.rand(2, 1, 32, 32, dtype=torch.float64)
    sa = build_model("sa", group="rot8", in_channels=1, basis="bicubic", **SMALL).double().eval()
    with torch.no_grad():
        for layer in sa.modules():
            if getattr(layer, "inv_scale", None) is not None:
                layer.theta0.uniform_(-0.2, 0.2)
                layer.inv_scale.uniform_(0.8, 1.2)
        own = sa.own_parameters().clone()
        bias = torch.tensor([0.1, 0.25, -0.15], dtype=torch.float64)
        sa.hyper.out.bias.copy_(bias)
        assert torch.allclose(sa.layer_parameters(x), own[None] + bias, rtol=0, atol=1e-15)
        # the same network as a tl whose layers hold own + offset
        tl = build_model("tl", group="rot8", in_channels=1, basis="bicubic", **SMALL).double().eval()
        tl.load_state_dict({k: v for k, v in sa.state_dict().items() if not k.startswith("hyper.")})
        for layer in tl.modules():
            if getattr(layer, "inv_scale", None) is not None:
                layer.theta0.add_(bias[0])
                layer.inv_scale.add_(bias[1:])
        assert (sa(x) - tl(x)).abs().max() < 1e-12
        # negative control: the bounded variant maps the same last-layer output through tanh, in log coordinates
        bounded = build_model("sa", group="rot8", in_channels=1, variant="bounded", **SMALL).double()
        bounded.hyper.out.bias.copy_(bias)
        assert not torch.allclose(bounded.predict_offsets(x)[0], bias)


def test_authors_mask_values_at_the_undeformed_taps():
    """rot8 5x5: corner exp(-5) = 0.0067, tap (2, 1) from the centre exp(-1.25) = 0.2865; no mask for rot4."""
    corner = math.exp(-max((1.0**2 + 1.0**2) - 1, 0) / 0.2)  # their MaskC, taps at x/p in {-1, -0.5, 0, 0.5, 1}
    tap21 = math.exp(-max((1.0**2 + 0.5**2) - 1, 0) / 0.2)
    assert abs(corner - 0.0067) < 5e-5 and abs(tap21 - 0.2865) < 5e-5
    model = build_model("tl", group="rot8", kernel_size=5, basis="bicubic", **SMALL)
    head = model.head
    mask = head.tap_mask.reshape(5, 5).double()  # rows top to bottom, columns left to right
    assert abs(mask[0, 0] - corner) < 1e-6 and abs(mask[4, 4] - corner) < 1e-6
    assert abs(mask[1, 4] - tap21) < 1e-6 and abs(mask[2 - 1, 2 + 2] - tap21) < 1e-6  # (dx, dy) = (2, 1)
    assert abs(mask[0, 1] - tap21) < 1e-6 and mask[2, 2] == 1 and mask[1, 1] == 1
    # the mask sits on the undeformed taps: with a deformation the corner row is still 0.0067 x the unmasked basis
    with torch.no_grad():
        head.theta0.fill_(0.3)
        head.inv_scale.copy_(torch.tensor([1.3, 0.8]))
        deformed = head.evaluate_basis(head.deformation_inverse()).double()
        points = torch.einsum(
            "gij,...jk,pk->gpi", head.inv_mats.double(), head.deformation_inverse().double(), head.points.double()
        )
        unmasked = BicubicBasis(5, disk=False)(points)
    assert torch.allclose(deformed, unmasked * mask.reshape(25)[None, :, None], rtol=0, atol=1e-6)
    # negative controls: no mask for rot4; the bounded variant's disk mask is evaluated at the deformed points
    rot4 = build_model("tl", group="rot4", kernel_size=5, **SMALL).head
    assert torch.equal(rot4.tap_mask, torch.ones(25))
    bounded = build_model("tl", group="rot8", kernel_size=5, variant="bounded", **SMALL).head
    assert bounded.tap_mask is None
    assert abs(float(bounded.phi.mask(torch.tensor([[2.0, 2.0]], dtype=torch.float64))) - corner) > 0.1


def authors_basis(theta0: float, big_cx: float, big_cy: float, order: int, size: int = 5) -> torch.Tensor:
    """Their GetBasis written from its formula, in their coordinates (X along columns, Y down rows).

    Tap ``(i, j)`` sits at ``(X, Y) = (j - c, i - c)``; it is rotated by ``theta0``, scaled by ``(Cx, Cy)``, rotated
    by ``2 pi o / order``, and the weight grid node ``(k, l)`` (at ``X = k``, ``Y = l``) weighs
    ``K(X' - k) K(Y' - l)``; times their mask at the tap. Returns ``(order, i, j, k, l)``.
    """
    c = (size - 1) / 2
    idx = torch.arange(size, dtype=torch.float64)
    y0, x0 = torch.meshgrid(idx - c, idx - c, indexing="ij")
    x1 = math.cos(theta0) * x0 - math.sin(theta0) * y0
    y1 = math.cos(theta0) * y0 + math.sin(theta0) * x0
    x1, y1 = x1 * big_cx, y1 * big_cy
    out = torch.zeros(order, size, size, size, size, dtype=torch.float64)
    r2 = (x0 / c) ** 2 + (y0 / c) ** 2
    mask = torch.ones_like(r2) if order in (1, 2, 4) else torch.exp(-(r2 - 1).clamp(min=0) / 0.2)
    for o in range(order):
        t = 2 * math.pi * o / order
        xs = math.cos(t) * x1 - math.sin(t) * y1
        ys = math.cos(t) * y1 + math.sin(t) * x1
        kx = cubic_kernel(xs[..., None] - (idx - c))  # (i, j, k)
        ky = cubic_kernel(ys[..., None] - (idx - c))  # (i, j, l)
        out[o] = kx[..., :, None] * ky[..., None, :] * mask[..., None, None]
    return out


@pytest.mark.parametrize("params", [(0.0, 1.0, 1.0), (0.3, 1.3, 0.8), (-0.7, 0.9, 1.15)])
def test_authors_parametrisation_matches_their_getbasis(params):
    """Our (theta0, Cx, Cy) layer evaluates exactly their GetBasis (rot8, 5x5, bicubic, their mask)."""
    layer = build_model("tl", group="rot8", kernel_size=5, basis="bicubic", **SMALL).double().head
    with torch.no_grad():
        layer.theta0.fill_(params[0])
        layer.inv_scale.copy_(torch.tensor(params[1:], dtype=torch.float64))
        ours = layer.evaluate_basis(layer.deformation_inverse()).reshape(8, 5, 5, 5, 5)  # (g, i, j, row, col)
    theirs = authors_basis(*params, order=8)  # (o, i, j, k, l): node k along columns, l down rows
    assert (ours - theirs.transpose(-1, -2)).abs().max() < 1e-12
    # negative control: reading their Cx as our cx (D instead of D^-1) gives another basis
    if params[1] != 1.0:
        wrong = authors_basis(params[0], 1 / params[1], 1 / params[2], order=8)
        assert (ours - wrong.transpose(-1, -2)).abs().max() > 1e-2


# --- conjugate equivariance only where one D is shared ------------------------------------------------------------


def test_tied_tl_is_equivariant_to_the_conjugates_and_a_per_layer_spread_is_not():
    """A dih4 tl with ONE D reads ~0 on D A D^-1; per-layer D (the authors' TL) has no such symmetry."""
    torch.manual_seed(13)
    x = torch.randn(1, 1, 12, 12, dtype=torch.float64)
    d = (math.pi / 4, 1.3, 1 / 1.3)  # keeps the diagonal reflections and the half turn (see conjugate_element)
    expected = {"e": "e", "rot180": "rot180", "flip": "rot90*flip", "flipud": "rot270*flip"}
    for variant in ("authors", "bounded"):
        tied = build_model("tl", group="dih4", in_channels=1, variant=variant, tie_transform=True, **TINY).double()
        with torch.no_grad():
            offset = tied.transform_offset(torch.tensor(d, dtype=torch.float64))
            tied.tied_deformation.copy_(offset + tied_identity(tied))
        assert torch.allclose(tied.layer_transforms(), torch.tensor(d, dtype=torch.float64).expand(5, 3))
        frame = conjugate_equivariance_error(tied, x, "dih4", disk=False)
        found = frame.dropna()
        assert dict(zip(found["element"], found["conjugate"], strict=True)) == expected
        assert found["equivariance_error"].max() < 1e-20
        spread = transform_spread(tied)
        assert (spread["sd_across_layers"] == 0).all() and spread["tied"].all()
        # negative control: the same D per layer with a small spread (0.05 rad, 0.03 in log scale) breaks it
        free = build_model("tl", group="dih4", in_channels=1, variant=variant, **TINY).double()
        free.load_state_dict({k: v for k, v in tied.state_dict().items() if k != "tied_deformation"}, strict=False)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for layer in free.modules():
                if getattr(layer, "theta0", None) is not None and layer.deformation_parameters() is not None:
                    jitter = torch.randn(3, generator=gen, dtype=torch.float64) * torch.tensor([0.05, 0.03, 0.03])
                    t = torch.tensor(d, dtype=torch.float64)
                    t = torch.stack([t[0] + jitter[0], t[1] * jitter[1].exp(), t[2] * jitter[2].exp()])
                    coords = free.transform_offset(t) + tied_identity(free)
                    layer.theta0.copy_(coords[0])
                    (layer.inv_scale if layer.inv_scale is not None else layer.log_scale).copy_(coords[1:])
        assert transform_spread(free).set_index("quantity").loc["theta0_deg", "sd_across_layers"] > 1.0
        with pytest.raises(UsageError, match="different D"):
            conjugate_equivariance_error(free, x, "dih4", disk=False)
        conj = Group("conjugates", tuple(get_group("dih4").element(c) for c in ("flip", "rot90*flip")))
        errors = equivariance_error(free, x, conj, disk=False, normalisation="learned")
        assert errors.set_index("element").loc["rot90*flip", "equivariance_error"] > 1e-4


def tied_identity(model) -> torch.Tensor:
    return torch.tensor(IDENTITY_PARAMETERS[model.parametrisation], dtype=torch.float64)


def test_sa_has_no_fixed_symmetry_and_its_offsets_spread_across_images():
    torch.manual_seed(14)
    x = torch.rand(4, 1, 32, 32, dtype=torch.float64)
    sa = build_model("sa", group="dih4", in_channels=1, **TINY).double().eval()
    spread = transform_spread(sa, x).set_index("quantity")
    assert (spread["sd_across_images"] == 0).all()  # zero last layer: every image gets the tl's D
    with torch.no_grad():
        sa.hyper.out.weight.normal_(0, 0.05)
    spread = transform_spread(sa, x).set_index("quantity")
    assert spread.loc["theta0_deg", "sd_across_images"] > 1e-3 and spread["n_images"].eq(4).all()
    with pytest.raises(UsageError, match="depends on the input"):
        conjugate_equivariance_error(sa, x, "dih4")
    with pytest.raises(UsageError, match="pass images"):
        transform_spread(sa)
    # with a fixed transform the hypernetwork is bypassed: one D, and its conjugates hold
    frame = conjugate_equivariance_error(sa, x[:1], "dih4", transform=torch.tensor([0.0, 1.3, 0.8]), disk=False)
    found = frame.dropna()
    assert set(found["conjugate"]) == {"e", "rot180", "flip", "flipud"} and found["equivariance_error"].max() < 1e-20
    with pytest.raises(UsageError, match="carry a deformation"):
        transform_spread(build_model("equivariant", **TINY))
