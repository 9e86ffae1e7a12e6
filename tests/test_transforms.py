import math

import pytest
import torch

from symmetry.groups import get_group, turn_matrix
from symmetry.transforms import (
    cubic,
    deformation_matrix,
    disk_mask,
    disk_offsets,
    imresize,
    interpolate,
    inverse_deformation_matrix,
    lattice_operator,
    lattice_windows,
    resize_matrix,
    rotation_matrix,
    sample_windows,
    to_mesh,
    transform_image,
    window_positions,
)


@pytest.mark.parametrize("shape", [(2, 3, 6, 9), (1, 7, 4)])
def test_quarter_turns_and_flips_are_torch_permutations(shape):
    x = torch.rand(*shape, dtype=torch.float64)
    g = get_group("dih4")
    expected = {
        "e": x,
        "rot90": torch.rot90(x, 1, (-2, -1)),
        "rot180": torch.rot90(x, 2, (-2, -1)),
        "rot270": torch.rot90(x, 3, (-2, -1)),
        "flip": torch.flip(x, (-1,)),
        "flipud": torch.flip(x, (-2,)),
    }
    for name, ref in expected.items():
        out, mask = transform_image(x, g.element(name))
        assert torch.equal(out, ref), name
        assert mask.all()


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "nearest"])
def test_windows_at_mesh_one_are_exact_gathers(method):
    """At h = 1 a quarter turn of an integer-centred window is a permutation of the rotated image's window."""
    img = torch.rand(1, 21, 21, dtype=torch.float64)
    off = disk_offsets(4.0, 1.0)
    centre = torch.tensor([[10.0, 10.0]], dtype=torch.float64)
    g = get_group("dih4")
    win = sample_windows(img, centre, off, g.matrices(), method)  # (G, 1, 1, P)
    for k, el in enumerate(g):
        moved, _ = transform_image(img, el)
        ref = sample_windows(moved, centre, off, g.matrices()[:1], method)[0]
        assert torch.equal(win[k], ref), el.name


def test_cubic_reproduces_quadratics():
    rows, cols = torch.meshgrid(torch.arange(12.0), torch.arange(12.0), indexing="ij")
    f = lambda r, c: 0.3 * r * r - 0.2 * r * c + c + 2  # noqa: E731
    img = f(rows, cols)[None].double()
    r = torch.rand(50, dtype=torch.float64) * 6 + 3
    c = torch.rand(50, dtype=torch.float64) * 6 + 3
    assert torch.allclose(interpolate(img, r, c, "bicubic")[0], f(r, c), atol=1e-10)
    assert torch.allclose(interpolate(img, r, c, "bilinear")[0], f(r, c), atol=0.5)


def test_disk_offsets_count_and_physical_radius():
    assert len(disk_offsets(1.0, 1.0)) == 5
    assert len(disk_offsets(2.0, 1.0)) == 13
    off = disk_offsets(3.0, 0.5)
    assert ((off * 0.5).norm(dim=1) <= 3.0 + 1e-9).all()
    with pytest.raises(ValueError):
        disk_offsets(0.0, 1.0)


def test_general_rotation_masks_out_of_frame():
    x = torch.ones(1, 9, 9, dtype=torch.float64)
    out, mask = transform_image(x, get_group("rot8").element("rot45"))
    assert not mask.all() and mask[4, 4]
    assert torch.allclose(out[0][mask], torch.ones(int(mask.sum()), dtype=torch.float64))


# ---- the one home: kernel, fused sampler, matrices, resizing ---------------------------------


def _keys(s: torch.Tensor) -> torch.Tensor:
    """Keys' cubic (a = -0.5) in MATLAB's power form, written independently of the package."""
    s = s.abs()
    return torch.where(
        s <= 1, 1.5 * s**3 - 2.5 * s**2 + 1, torch.where(s < 2, -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2, 0 * s)
    )


def _reference_interpolate(image, rows, cols, method):
    """Per-point, per-tap interpolation with clamped taps: the straightforward definition."""
    c, h, w = image.shape
    taps = range(-1, 3) if method == "bicubic" else range(0, 2)
    kernel = _keys if method == "bicubic" else (lambda s: (1 - s.abs()).clamp(min=0))
    r, q = rows.double().reshape(-1), cols.double().reshape(-1)
    out = torch.zeros(c, len(r), dtype=torch.float64)
    for i in taps:
        for j in taps:
            ri, qi = torch.floor(r) + i, torch.floor(q) + j
            weight = kernel(r - ri) * kernel(q - qi)
            pix = image.double()[:, ri.long().clamp(0, h - 1), qi.long().clamp(0, w - 1)]
            out += weight * pix
    return out.reshape(c, *rows.shape)


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("channels", [1, 6])  # one contiguous channel at a time, and channels last
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_interpolate_agrees_with_a_per_tap_reference(method, channels, dtype):
    g = torch.Generator().manual_seed(1)
    img = torch.rand(channels, 13, 17, generator=g, dtype=torch.float64).to(dtype)
    for low, high in ((2.0, 10.0), (-4.0, 20.0)):  # inside, then reaching past every edge (clamped taps)
        rows = low + (high - low) * torch.rand(7, 11, generator=g, dtype=torch.float64)
        cols = low + (high - low) * torch.rand(7, 11, generator=g, dtype=torch.float64)
        ours = interpolate(img, rows.to(dtype), cols.to(dtype), method)
        ref = _reference_interpolate(img, rows.to(dtype), cols.to(dtype), method)
        assert ours.shape == (channels, 7, 11) and ours.dtype == dtype
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        assert ((ours.double() - ref).abs().max() / ref.abs().max()).item() < tol


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
@pytest.mark.parametrize("channels", [2, 5])
def test_interpolate_returns_stored_pixels_at_integer_positions(method, channels):
    img = torch.randn(channels, 9, 8, dtype=torch.float32)
    rows, cols = torch.meshgrid(torch.arange(-3.0, 12.0), torch.arange(-3.0, 11.0), indexing="ij")
    out = interpolate(img, rows, cols, method)
    expected = img[:, rows.long().clamp(0, 8), cols.long().clamp(0, 7)]
    assert torch.equal(out, expected)


@pytest.mark.parametrize("method", ["bicubic", "bilinear"])
def test_quarter_turn_and_flip_positions_sample_an_exact_permutation(method):
    """Sampled (not gathered) at the positions of rot90, rot180 and the flips, the result is torch's, bit for bit."""
    img = torch.rand(3, 7, 7, dtype=torch.float64)
    centre = torch.tensor([[3.0, 3.0]], dtype=torch.float64)
    rr, qq = torch.meshgrid(torch.arange(7.0), torch.arange(7.0), indexing="ij")
    pts = torch.stack([qq - 3, 3 - rr], dim=-1).reshape(-1, 2).double()
    g = get_group("dih4")
    expected = {
        "rot90": torch.rot90(img, 1, (-2, -1)),
        "rot180": torch.rot90(img, 2, (-2, -1)),
        "flip": torch.flip(img, (-1,)),
        "flipud": torch.flip(img, (-2,)),
    }
    for name, ref in expected.items():
        rows, cols = window_positions(centre, pts, g.element(name).tensor()[None])
        assert torch.equal(interpolate(img, rows.reshape(7, 7), cols.reshape(7, 7), method), ref), name


def test_interpolate_is_differentiable_in_image_and_positions():
    """Gradients through the fused, in-place accumulation equal those of the per-tap reference."""
    img = torch.rand(2, 6, 6, dtype=torch.float64)
    rows, cols = -1 + 7 * torch.rand(2, 9, dtype=torch.float64), -1 + 7 * torch.rand(2, 9, dtype=torch.float64)
    weights = torch.randn(2, 2, 9, dtype=torch.float64)
    grads = []
    for f in (interpolate, _reference_interpolate):
        inputs = [t.clone().requires_grad_() for t in (img, rows, cols)]
        grads.append(torch.autograd.grad((f(*inputs, "bicubic") * weights).sum(), inputs))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


def test_cubic_is_keys_kernel_and_interpolating():
    x = torch.linspace(-2.5, 2.5, 101, dtype=torch.float64)
    torch.testing.assert_close(cubic(x), _keys(x), rtol=0, atol=1e-14)
    assert torch.equal(cubic(torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])), torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    t = torch.rand(50, dtype=torch.float64)
    total = sum(cubic(t - k) for k in (-1, 0, 1, 2))  # the four taps of a fractional position
    torch.testing.assert_close(total, torch.ones_like(t), rtol=0, atol=1e-14)


def test_turn_and_deformation_matrices():
    assert torch.equal(turn_matrix(0.25), torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64))
    assert torch.equal(turn_matrix(-0.5), -torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(turn_matrix(1 / 8), rotation_matrix(math.pi / 4), rtol=0, atol=1e-15)
    theta, cx, cy = torch.tensor([0.3, 1.2]), torch.tensor([1.5, 0.8]), torch.tensor([0.7, 1.1])
    expected = rotation_matrix(theta.double()) @ torch.diag_embed(torch.stack([cx, cy], -1).double())
    torch.testing.assert_close(deformation_matrix(theta, cx, cy), expected, rtol=0, atol=1e-15)
    product = inverse_deformation_matrix(theta, cx, cy) @ deformation_matrix(theta, cx, cy)
    torch.testing.assert_close(product, torch.eye(2, dtype=torch.float64).expand(2, 2, 2), rtol=0, atol=1e-15)


def test_disk_mask_holds_the_disk_lattice():
    mask = disk_mask(11, 11, 4.2)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    ours = sorted(zip((cols - 5).tolist(), (5 - rows).tolist()))
    assert ours == sorted(map(tuple, disk_offsets(4.2, 1.0).long().tolist()))


def test_lattice_operator_is_interpolate_on_lattice_values():
    """``T y`` equals interpolating the image that holds ``y`` on the source points (zero elsewhere)."""
    src, dst = disk_offsets(6.0, 1.0), disk_offsets(3.0, 1.0)
    y = torch.randn(len(src), dtype=torch.float64)
    canvas = torch.zeros(1, 17, 17, dtype=torch.float64)  # 2 pixels of zero margin around the source disk
    canvas[0, (8 - src[:, 1]).long(), (8 + src[:, 0]).long()] = y
    g = get_group("rot8")
    ops = lattice_operator(g.matrices(), src, dst)  # (8, P_dst, P_src)
    rows, cols = window_positions(torch.tensor([[8.0, 8.0]], dtype=torch.float64), dst, g.matrices())
    sampled = interpolate(canvas, rows[:, 0], cols[:, 0])[0]  # (8, P_dst)
    torch.testing.assert_close(ops @ y, sampled, rtol=0, atol=1e-12)
    quarter = ops[2]  # rot90: an exact 0/1 selection
    assert torch.equal(quarter.sum(1), torch.ones(len(dst), dtype=torch.float64))
    assert set(quarter.unique().tolist()) == {0.0, 1.0}


def test_to_mesh_resamples_a_ramp_exactly_away_from_the_border():
    """The cubic reproduces linear functions; to_mesh keeps the image corners fixed (MATLAB's imresize)."""
    n = 24
    ramp = (0.5 * torch.arange(n, dtype=torch.float64) + 1)[None, None, :].expand(1, n, n)
    for mesh in (0.5, 2.0):
        out = to_mesh(ramp, mesh)
        m = round(n / mesh)
        assert out.shape == (1, m, m)
        pos = (torch.arange(m, dtype=torch.float64) + 0.5) * mesh - 0.5  # output pixel centres in input pixels
        inner = slice(4, m - 4)
        torch.testing.assert_close(out[0, 0, inner], 0.5 * pos[inner] + 1, rtol=0, atol=1e-12)
    assert to_mesh(ramp, 1.0) is ramp


@pytest.mark.parametrize("kind", ["plain", "equivariant"])
@pytest.mark.parametrize("scale", [2, 3])
def test_sr_skip_equals_the_bicubic_baseline_bit_for_bit(kind, scale):
    """A network with a zero residual returns exactly the reported bicubic baseline (one resize serves both)."""
    from analysis.evaluate import run_model
    from analysis.models import build_model
    from analysis.tasks import Example, baseline

    torch.manual_seed(0)
    model = build_model(kind, scale=scale, in_channels=3, width=2, depth=1, kernel_size=3)
    with torch.no_grad():
        for p in model.tail.parameters():
            p.zero_()
    lr = torch.rand(3, 10, 7)
    example = Example("x", lr, torch.rand(3, 10 * scale, 7 * scale))
    ours = baseline(example, "sr", scale)
    assert ours.shape == (3, 10 * scale, 7 * scale) and ours.dtype == torch.float32
    assert torch.equal(run_model(model, lr), ours)
    batch = torch.stack([lr, lr.flip(-1)])
    with torch.no_grad():
        assert torch.equal(model(batch)[0], ours)  # batching changes no bit


@pytest.mark.parametrize("method", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("turn", [0, 1, 2, 3])  # eighth turns: the identity, 45 degrees (lines 1/sqrt 2 apart), ...
def test_lattice_windows_are_interpolate_on_the_moved_lattice(method, channels, turn):
    """The line-separable sampler equals interpolate at window_positions, inside the frame (the grid of lines) and
    across its edge (the clamped fallback), for the eighth turns and for 22.5 degrees (no line structure: the
    fallback); a centre moved by 0.3 px (negative control) does not."""
    g = torch.Generator().manual_seed(4)
    img = torch.rand(channels, 40, 50, generator=g, dtype=torch.float64)
    offsets = disk_offsets(4.0, 0.5)  # integer lattice, half-width 8
    matrix = rotation_matrix(torch.tensor(turn * math.pi / 4 if turn < 3 else math.pi / 8, dtype=torch.float64))
    for low, high in ((11.0, 28.0), (-3.0, 45.0)):  # every block inside, then reaching past the edges
        centers = low + (high - low) * torch.rand(9, 2, generator=g, dtype=torch.float64)
        rows, cols = window_positions(centers, offsets, matrix[None])
        want = interpolate(img, rows[0], cols[0], method)
        got = lattice_windows(img, centers, offsets, matrix, method)
        assert got.shape == (channels, 9, len(offsets))
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        moved = lattice_windows(img, centers + torch.tensor([0.3, 0.0], dtype=torch.float64), offsets, matrix, method)
        if method != "nearest":
            assert (moved - want).abs().max() > 1e-3


@pytest.mark.parametrize("sizes", [(9, 18), (25, 50), (12, 36), (40, 17)])
def test_resize_matrix_is_imresize_along_an_axis(sizes):
    """``M @ x`` equals imresize of the rows (up- and downscaling, mirrored taps at the edges), to rounding; the
    matrix without the antialiasing stretch (negative control) differs when downscaling."""
    n_in, n_out = sizes
    x = torch.rand(n_in, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = imresize(x, size=(n_out, 7))
    torch.testing.assert_close(resize_matrix(n_in, n_out) @ x, want, rtol=0, atol=1e-13)
    if n_out < n_in:
        assert (resize_matrix(n_in, n_out, antialias=False) @ x - want).abs().max() > 1e-3


def test_lattice_windows_keep_their_lines_in_float32(monkeypatch):
    """A float32 run (a GPU's dtype) finds the 45-degree lattice's lines as a float64 run does (no fallback to
    tap-by-tap sampling) and agrees with interpolate to float32 rounding of the positions."""
    import symmetry.transforms as transforms

    calls: list[int] = []
    pointwise = transforms.interpolate
    monkeypatch.setattr(transforms, "interpolate", lambda *a, **k: (calls.append(1), pointwise(*a, **k))[1])
    g = torch.Generator().manual_seed(5)
    img = torch.rand(1, 120, 120, generator=g)
    centers = 40 + 40 * torch.rand(9, 2, generator=g)
    offsets = disk_offsets(4.0, 0.5).float()
    matrix = rotation_matrix(torch.tensor(math.pi / 4, dtype=torch.float64)).float()
    got = transforms.lattice_windows(img, centers, offsets, matrix)
    assert calls == []  # the grid of lines, not the fallback
    rows, cols = window_positions(centers, offsets, matrix[None])
    torch.testing.assert_close(got, pointwise(img, rows[0], cols[0]), rtol=0, atol=1e-4)
