"""The bicubic-interpolation (B-Conv) basis against an independent derivation, and its group symmetries."""

from __future__ import annotations

import math

import pytest
import torch

from analysis.basis import BicubicBasis, cubic_kernel, kernel_grid, make_basis
from analysis.layers import GroupConv, LiftConv
from symmetry.errors import UsageError
from symmetry.groups import get_group


def keys(s: float) -> float:
    """Keys' cubic convolution kernel with a = -0.5, written from its definition (Keys 1981, eq. 15)."""
    s = abs(s)
    if s <= 1:
        return 1.5 * s**3 - 2.5 * s**2 + 1
    if s < 2:
        return -0.5 * s**3 + 2.5 * s**2 - 4 * s + 2
    return 0.0


def test_cubic_kernel_known_values_and_partition_of_unity():
    d = torch.tensor([0.0, 0.5, -0.5, 1.0, 1.5, -1.5, 2.0, 2.5, 0.25], dtype=torch.float64)
    expected = torch.tensor([1.0, 0.5625, 0.5625, 0.0, -0.0625, -0.0625, 0.0, 0.0, keys(0.25)], dtype=torch.float64)
    assert torch.allclose(cubic_kernel(d), expected, rtol=0, atol=1e-15)
    t = torch.rand(50, dtype=torch.float64)
    shifts = torch.arange(-2, 3, dtype=torch.float64)
    assert torch.allclose(cubic_kernel(t[:, None] - shifts).sum(1), torch.ones(50, dtype=torch.float64))


def test_bicubic_basis_matches_independent_derivation_inside_the_disk():
    """Inside the mask radius phi_j(p) = K(p_x - n_jx) K(p_y - n_jy) for nodes n_j inside the disk too."""
    basis = BicubicBasis(5)
    nodes = kernel_grid(5)
    g = torch.Generator().manual_seed(0)
    radius = torch.rand(40, generator=g, dtype=torch.float64) * 2.0
    angle = torch.rand(40, generator=g, dtype=torch.float64) * 2 * math.pi
    points = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)
    values = basis(points)
    assert values.shape == (40, 25)
    for j, (nx, ny) in enumerate(nodes.tolist()):
        if nx * nx + ny * ny > 4:
            continue  # corner nodes: normalised by the mask, checked at the nodes below
        for i, (px, py) in enumerate(points.tolist()):
            assert values[i, j].item() == pytest.approx(keys(px - nx) * keys(py - ny), abs=1e-14)


@pytest.mark.parametrize("size", [3, 5, 7])
def test_bicubic_filter_reproduces_its_coefficients_at_the_nodes(size):
    basis = BicubicBasis(size)
    grid = kernel_grid(size)
    assert torch.equal(basis(grid), torch.eye(size * size, dtype=torch.float64))
    w = torch.randn(size * size, dtype=torch.float64)
    assert torch.allclose(basis(grid) @ w, w, rtol=0, atol=1e-15)


@pytest.mark.parametrize("element", get_group("dih4").elements, ids=lambda e: e.name)
def test_bicubic_basis_is_permuted_by_the_group(element):
    """phi_j(A^-1 p) = phi_pi(j)(p) with n_pi(j) = A n_j: the group permutes the basis functions."""
    basis = BicubicBasis(5)
    nodes = kernel_grid(5)
    a = element.tensor()
    moved = nodes @ a.T  # A n_j
    perm = [int(((nodes - m).abs().sum(1) == 0).nonzero()) for m in moved]
    points = torch.randn(30, 2, dtype=torch.float64) * 1.5
    lhs = basis(points @ a)  # rows: A^-1 p (A orthogonal: p @ A = A^T p)
    rhs = basis(points)[:, perm]
    assert torch.allclose(lhs, rhs, rtol=0, atol=1e-15)


def test_quarter_turn_of_a_bicubic_filter_is_a_permutation_of_taps():
    basis = BicubicBasis(5)
    grid = kernel_grid(5)
    w = torch.randn(25, dtype=torch.float64)
    filt = (basis(grid) @ w).reshape(5, 5)
    quarter_inv = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)  # R(90)^-1
    rotated = (basis(grid @ quarter_inv.T) @ w).reshape(5, 5)
    assert torch.equal(rotated, torch.rot90(filt, 1, dims=(0, 1)))
    flip = torch.tensor([[-1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert torch.equal((basis(grid @ flip.T) @ w).reshape(5, 5), filt.flip(1))


@pytest.mark.parametrize("group", ["rot8", "dih4"])
def test_layer_basis_buffers_are_exact_permutations_for_grid_exact_elements(group):
    """In float32 too: the stored bases of quarter turns and flips are the identity's taps reordered, bit for bit."""
    layer = GroupConv(2, 2, group, 5, basis="bicubic")
    grid = kernel_grid(5)
    for g, el in enumerate(layer.group):
        if not el.is_grid_exact:
            continue
        src = grid @ el.tensor()  # A^-1 delta for each tap delta
        perm = [int(((grid - p).abs().sum(1) == 0).nonzero()) for p in src]
        assert torch.equal(layer.basis[g], layer.basis[0][perm])


def test_bicubic_layers_have_one_weight_per_node_and_unknown_bases_are_usage_errors():
    assert LiftConv(3, 2, "rot4", 5, basis="bicubic").n_basis == 25
    assert LiftConv(3, 2, "rot4", 5).n_basis == 13  # Fourier
    with pytest.raises(UsageError, match="unknown basis"):
        make_basis("wavelet", 5)
