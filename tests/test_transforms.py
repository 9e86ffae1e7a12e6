import pytest
import torch

from symmetry.groups import get_group
from symmetry.transforms import disk_offsets, interpolate, sample_windows, transform_image


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
