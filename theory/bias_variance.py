"""Bias-variance decomposition of a restoration risk and the closed-form risk of least squares (docs/theory.md, 2.4).

Section 4 of the paper splits a model's expected risk into bias and variance: forcing more equivariance than the
data has adds bias (growing with the data's symmetry error eps), allowing less leaves more variance (worst with little
data).

- :func:`decompose`: for predictions ``f_s`` of ``S`` models trained on independent (disjoint) training sets and the
  clean targets ``y``, ``risk = mean_s ||f_s - y||^2`` splits exactly into ``bias2 = ||f_bar - y||^2`` (``f_bar`` the
  seed-averaged prediction) and ``variance = mean_s ||f_s - f_bar||^2`` (all norms are means over values), with the
  seed-corrected ``bias2_corrected``; :func:`tidy` turns a wide table of such rows into one row per component.
- Uncertainty: :func:`paired_difference` (a paired t interval and p-value over seeds for a difference of risks) and
  :func:`holm` (Holm's adjustment of a family of such p-values).
- :func:`ols_risk`: the closed-form risk ``sigma_G^2 (1 + p_G / (N - p_G - 1))`` of a least-squares fit with ``p_G``
  free coefficients on ``N`` independent Gaussian-design rows (bias in ``sigma_G^2``, variance in the second term);
  :func:`effective_rows` inverts it for the number of independent rows that overlapping patches are worth.

The linear filters themselves are in :mod:`theory.linear_filters`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from symmetry.errors import UsageError

COMPONENTS = ("risk", "bias2", "variance", "noise")


def _as_float64(x) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64)
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def decompose(predictions, targets, *, noise: float | None = None) -> dict[str, float]:
    """Split the mean squared error of ``S`` trained models into bias^2 and variance (docs/theory.md, section 2.4).

    ``predictions``: ``(S, N, ...)``, model ``s``'s prediction of every test value; ``targets``: ``(N, ...)`` (the
    clean targets, the same for every seed) or ``(S, N, ...)`` holding the same targets per seed. With
    ``f_bar = mean_s f_s`` and all norms means over the ``N * ...`` values, the identity

        mean_s ||f_s - y||^2 = ||f_bar - y||^2 + mean_s ||f_s - f_bar||^2

    holds exactly (the cross term sums to zero); computed in float64 it holds to rounding. ``bias2`` of the seed
    mean still contains the variance of the mean over ``S`` seeds: with ``variance`` (a ``1/S`` mean),
    ``E bias2 = b^2 + E variance / (S - 1)``, so ``bias2_corrected = bias2 - variance / (S - 1)`` is unbiased for
    the population bias^2 ``b^2`` (it can fall below 0 by chance). ``noise`` is the irreducible part of the error
    when known; it is then returned with ``excess_bias2 = bias2_corrected - noise``. Returns ``risk, bias2,
    bias2_corrected, variance, n_seeds, n_values, risk_seed_std`` (+ ``noise``, ``excess_bias2``).
    """
    f = _as_float64(predictions)
    y = _as_float64(targets)
    if f.dim() < 2:
        raise UsageError(f"predictions must be (S, N, ...), got shape {tuple(f.shape)}")
    if y.shape == f.shape:
        if not torch.equal(y, y[:1].expand_as(y)):
            raise UsageError("per-seed targets differ between seeds; the decomposition needs one target per value")
        y = y[0]
    if y.shape != f.shape[1:]:
        raise UsageError(f"targets {tuple(y.shape)} do not match predictions {tuple(f.shape)} (S, N, ...)")
    f = f.reshape(f.shape[0], -1)
    y = y.reshape(-1)
    f_bar = f.mean(0)
    per_seed = (f - y).square().mean(1)
    out = {
        "risk": float(per_seed.mean()),
        "bias2": float((f_bar - y).square().mean()),
        "variance": float((f - f_bar).square().mean()),
        "n_seeds": int(f.shape[0]),
        "n_values": int(f.shape[1]),
        "risk_seed_std": float(per_seed.std(unbiased=False)),
    }
    s = f.shape[0]
    out["bias2_corrected"] = out["bias2"] - out["variance"] / (s - 1) if s > 1 else math.nan
    if noise is not None:
        out["noise"] = float(noise)
        out["excess_bias2"] = out["bias2_corrected"] - float(noise)
    return out


def tidy(
    frame: pd.DataFrame, id_vars: Sequence[str] | None = None, components: Iterable[str] = COMPONENTS
) -> pd.DataFrame:
    """One row per (experiment row, component): columns ``id_vars + [component, value]``.

    ``components`` absent from ``frame`` are skipped, as are missing values (say, ``noise`` where it is unknown).
    ``id_vars`` defaults to every column that is not a component.
    """
    comps = [c for c in components if c in frame.columns]
    if not comps:
        raise UsageError(f"frame has none of the components {', '.join(components)}")
    ids = list(id_vars) if id_vars is not None else [c for c in frame.columns if c not in comps]
    long = frame.melt(id_vars=ids, value_vars=comps, var_name="component", value_name="value")
    return long.dropna(subset=["value"]).reset_index(drop=True)


def paired_difference(a, b, level: float = 0.95) -> dict[str, float]:
    """Mean of ``a_s - b_s`` over seeds with its two-sided Student t interval (paired: same training set per seed).

    Returns ``mean, low, high, sd, n`` and ``p`` (two-sided paired t test of a zero mean); with fewer than two seeds
    the interval and ``p`` are NaN (a zero spread gives ``p = 0`` for a nonzero mean, 1 otherwise).
    """
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or d.size == 0:
        raise UsageError(f"paired risks must be two equal-length 1-d sequences, got shape {d.shape}")
    mean = float(d.mean())
    if d.size < 2:
        return {"mean": mean, "low": math.nan, "high": math.nan, "sd": math.nan, "n": int(d.size), "p": math.nan}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * sd / math.sqrt(d.size)
    if sd > 0:
        p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(d.size)), d.size - 1))
    else:
        p = 0.0 if mean != 0 else 1.0
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": int(d.size), "p": p}


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate): the ``k``-th
    smallest is multiplied by ``m - k + 1`` (``k`` from 1), made monotone and capped at 1; NaN stays NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    vals = p[ok]
    order = np.argsort(vals)
    m = vals.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * vals[order]))
    back = np.empty(m)
    back[order] = adjusted
    out[ok] = back
    return out


def effective_rows(oracle: float, risk: float, params: int) -> float:
    """The number of independent rows ``N_eff`` at which :func:`ols_risk` equals a measured ``risk``:
    ``N_eff = p + 1 + oracle * p / (risk - oracle)`` (infinite when ``risk <= oracle``).

    Overlapping windows give tap vectors that share pixels, so the ``N`` training pixels are not ``N`` independent
    rows; calibrating ``N_eff / N`` on one model (the plain filter) and using it for the others is what
    ``bias_variance`` does (docs/theory.md, section 2.4)."""
    excess = risk - oracle
    return math.inf if excess <= 0 else params + 1 + oracle * params / excess


def ols_risk(sigma2: float, params: int, samples: float) -> float:
    """Expected test risk of least squares with ``params`` coefficients on ``samples`` Gaussian-design rows:
    ``sigma2 * (1 + p / (N - p - 1))`` (``sigma2`` the model's risk with unlimited data: noise plus its bias);
    infinite when ``N <= p + 1``."""
    if samples <= params + 1:
        return math.inf
    return float(sigma2) * (1.0 + params / (samples - params - 1))
