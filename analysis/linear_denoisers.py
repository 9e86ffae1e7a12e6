"""The linear family of the bias-variance experiment: G-invariant filters, augmentation, Lemma 4.1 after training
and the sample-adaptive filter, fitted per seed from precomputed per-window normal equations.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from analysis.denoise_windows import pools
from symmetry.errors import UsageError
from theory.linear_filters import (
    augmented_normal_equations,
    dominant_orientation,
    fit_filter,
    group_average_operator,
    interior,
    invariant_basis,
    normal_equations,
    patch_vectors,
    rotatable_basis,
    rotation_operators,
)


@lru_cache(maxsize=8)
def prepared(spec: str, key: tuple, data_root: str | None) -> dict[str, torch.Tensor]:
    """The pools plus what every linear cell of a dataset shares: test tap vectors, targets, per-sample angles."""
    prep = dict(pools(spec, key, data_root))
    r = dict(key)["radius"]
    n = prep["test_noisy"].shape[0]
    prep["test_patches"] = patch_vectors(prep["test_noisy"], r).flatten(1, 2)
    prep["test_target"] = interior(prep["test_clean"], r).reshape(n, -1)
    prep["train_angles"] = dominant_orientation(prep["train_noisy"])
    prep["test_angles"] = dominant_orientation(prep["test_noisy"])
    # per-window normal equations: a seed's least squares is a sum over its windows (no patch extraction per fit)
    grams, crosses, squares = [], [], []
    for start in range(0, prep["train_noisy"].shape[0], 64):
        v = patch_vectors(prep["train_noisy"][start : start + 64], r).flatten(1, 2)
        x = interior(prep["train_clean"][start : start + 64], r).flatten(1)
        grams.append(torch.einsum("nqi,nqj->nij", v, v))
        crosses.append(torch.einsum("nqi,nq->ni", v, x))
        squares.append(x.square().sum(1))
    prep["train_gram"], prep["train_cross"], prep["train_square"] = (
        torch.cat(grams),
        torch.cat(crosses),
        torch.cat(squares),
    )
    return prep


@lru_cache(maxsize=32)
def linear_basis(model: str, radius: int, sa_group: str, angle_step: float) -> torch.Tensor:
    """The filters a linear model may use: G-invariant (``rotN``), all (``plain``, ``aug:``, ``avg:``), or for ``sa``
    the ``sa_group``-invariant filters that interpolated rotations keep
    (:func:`theory.bias_variance.rotatable_basis`)."""
    if model == "sa":
        return rotatable_basis(radius, sa_group, angle_step)
    if ":" in model:
        return invariant_basis(radius, "plain")
    return invariant_basis(radius, model)


def arm(model: str) -> tuple[str, str | None]:
    """``"aug:rot4"`` -> ``("aug", "rot4")``; a ladder model or ``sa`` -> ``(model, None)``."""
    if ":" not in model:
        return model, None
    kind, group = model.split(":", 1)
    if kind not in ("aug", "avg"):
        raise UsageError(f"unknown model arm {model!r}; use aug:GROUP or avg:GROUP")
    return kind, group


def fit_linear(cell: dict, prep: dict, index: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Least-squares filter on the training samples ``index`` of the pool (per-sample rotations for ``sa``;
    augmented normal equations for ``aug:G``; the group average ``Pi_G`` of the plain fit for ``avg:G``)."""
    if cell["model"] == "sa":
        ops = rotation_operators(cell["radius"], prep["train_angles"][index], cell["angle_step"])
        a, b, _ = normal_equations(prep["train_noisy"][index], prep["train_clean"][index], cell["radius"], ops)
    else:
        a, b = prep["train_gram"][index].sum(0), prep["train_cross"][index].sum(0)
    kind, group = arm(cell["model"])
    if kind == "aug":
        a, b = augmented_normal_equations(a, b, cell["radius"], group)
    w = fit_filter(a, b, basis)
    if kind == "avg":
        w = group_average_operator(cell["radius"], group) @ w
    return w


def apply_linear(cell: dict, weights: torch.Tensor, patches: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Predictions ``(S, N, Q)`` of filters ``weights`` ``(S, P)`` from tap vectors ``patches`` ``(N, Q, P)``."""
    if cell["model"] != "sa":
        return torch.einsum("nqp,sp->snq", patches, weights)
    ops = rotation_operators(cell["radius"], angles, cell["angle_step"])
    return torch.einsum("nqp,snp->snq", patches, torch.einsum("npk,sk->snp", ops, weights))


@lru_cache(maxsize=64)
def oracle_risk(spec: str, key: tuple, data_root: str | None, model: str, sa_group: str, angle_step: float) -> float:
    """Test MSE of ``model``'s filter fitted on the whole training pool (its risk with unlimited data)."""
    prep = prepared(spec, key, data_root)
    cell = {"model": model, "radius": dict(key)["radius"], "angle_step": angle_step}
    basis = linear_basis(model, cell["radius"], sa_group, angle_step)
    w = fit_linear(cell, prep, torch.arange(prep["train_noisy"].shape[0]), basis)
    pred = apply_linear(cell, w[None], prep["test_patches"], prep["test_angles"])[0]
    return float((pred - prep["test_target"]).square().mean())
