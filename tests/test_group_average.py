"""Lemma 4.1 as a wrapper: GroupAverage makes any model exactly equivariant to a grid-exact group."""

from __future__ import annotations

import pytest
import torch

from analysis.equivariance import equivariance_error
from analysis.models import GroupAverage, build_model
from symmetry.errors import UsageError
from symmetry.groups import get_group
from symmetry.transforms import transform_image


def learned_errors(model: torch.nn.Module, x: torch.Tensor, group: str) -> dict[str, float]:
    df = equivariance_error(model, x, group, disk=False, normalisation="learned")
    return dict(zip(df["element"], df["equivariance_error"], strict=True))


@pytest.mark.parametrize("scale", [1, 2])
def test_group_average_of_a_plain_net_is_dih4_equivariant(scale):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 12)  # not square: odd quarter turns swap height and width
    plain = build_model("plain", scale=scale, width=6, depth=1)
    assert min(v for k, v in learned_errors(plain, x, "dih4").items() if k != "e") > 1e-2
    averaged = GroupAverage(plain, "dih4")
    assert averaged.cost_factor == 8
    errors = learned_errors(averaged, x, "dih4")
    assert max(errors.values()) < 1e-6, errors
    # the relative (not squared) error ||f(Ax) - A f(x)|| / ||f(x)|| in float32 too (~1e-7: summation order)
    with torch.no_grad():
        y = averaged(x)
        for el in get_group("dih4"):
            a = averaged(transform_image(x, el)[0])
            b = transform_image(y, el)[0]
            assert ((a - b).norm() / b.norm()).item() < 1e-6


def test_group_average_is_the_formula_of_lemma_4_1():
    torch.manual_seed(1)
    x = torch.randn(1, 1, 7, 9, dtype=torch.float64)
    plain = build_model("plain", in_channels=1, width=3, depth=1).double()
    averaged = GroupAverage(plain, "flip")
    with torch.no_grad():
        expected = 0.5 * (plain(x) + plain(x.flip(-1)).flip(-1))
        assert torch.allclose(averaged(x), expected, rtol=0, atol=1e-14)


def test_group_average_leaves_an_equivariant_model_unchanged():
    torch.manual_seed(2)
    x = torch.randn(1, 3, 10, 10, dtype=torch.float64)
    model = build_model("equivariant", group="dih4", width=2, depth=1).double().eval()
    with torch.no_grad():
        assert (GroupAverage(model, "dih4")(x) - model(x)).abs().max() < 1e-12


def test_group_average_refuses_groups_that_are_not_grid_exact():
    plain = build_model("plain", width=2, depth=1)
    with pytest.raises(UsageError, match="grid-exact"):
        GroupAverage(plain, "rot8")
    with pytest.raises(UsageError):
        GroupAverage(plain, "hexagon")
    assert GroupAverage(plain, "rot4").cost_factor == 4
