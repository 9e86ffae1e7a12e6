import pytest
import torch

from symmetry.groups import MAX_ORDER, UnknownGroupError, get_group, is_subgroup


@pytest.mark.parametrize(
    "name,order",
    [
        ("rot1", 1),
        ("rot4", 4),
        ("rot8", 8),
        ("rot7", 7),
        ("flip", 2),
        ("flipud", 2),
        ("dih4", 8),
        ("dih1", 2),
        ("so2", 36),
        ("so2:12", 12),
    ],
)
def test_orders_and_closure(name, order):
    g = get_group(name)
    assert len(g) == order and g[0].is_identity
    mats = g.matrices()
    assert torch.allclose(mats @ mats.transpose(1, 2), torch.eye(2, dtype=torch.float64).expand(order, 2, 2))
    for a in mats:  # closed under composition and inverses
        for b in mats:
            assert any(torch.allclose(a @ b, c, atol=1e-12) for c in mats)


def test_quarter_turns_and_flips_are_exact_integers():
    g = get_group("dih4")
    assert all(e.is_grid_exact for e in g)
    assert g.element("rot90").matrix == ((0.0, -1.0), (1.0, 0.0))
    assert g.element("flip").matrix == ((-1.0, 0.0), (0.0, 1.0))
    assert g.element("flipud").matrix == ((1.0, 0.0), (0.0, -1.0))
    assert not get_group("rot8").element("rot45").is_grid_exact


def test_subgroups():
    assert is_subgroup("rot4", "rot8") and is_subgroup("rot8", "rot16") and is_subgroup("rot4", "dih4")
    assert is_subgroup("flip", "dih4") and is_subgroup("flipud", "dih4")
    assert not is_subgroup("rot8", "rot4") and not is_subgroup("flip", "rot8") and not is_subgroup("rot3", "rot8")


@pytest.mark.parametrize("bad", ["rot", "rotate4", "dih0", "rot0", "so2:0", "", "hex"])
def test_unknown_group_lists_valid_names(bad):
    with pytest.raises(UnknownGroupError, match="rotN"):
        get_group(bad)


@pytest.mark.parametrize("name", ["rot0", "rot4097", "dih2049", "so2:0", "so2:99999999999999999999"])
def test_group_orders_outside_the_bound_are_refused_before_building(name):
    with pytest.raises(UnknownGroupError, match="between 1 and"):
        get_group(name)
    assert get_group("rot4096").order == MAX_ORDER and get_group("dih2048").order == MAX_ORDER
