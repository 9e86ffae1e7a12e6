"""Closed-form theory the experiments test (docs/theory.md).

- :mod:`theory.deconvolution`: Theorem 3.6 in its own setting (Riemann-sum deconvolution of analytic images, the
  constants of SM5.52, the continuum value of the equivariance error, each proof step's bound).
- :mod:`theory.optimal`: the optimal linear (LMMSE) restoration operator of synthetic fields (a proxy of Theorem 3.6).
- :mod:`theory.bias_variance`: the bias-variance split of Section 4, paired intervals, Holm's adjustment and the
  closed-form risk of least squares with an effective sample size.
- :mod:`theory.linear_filters`: G-invariant linear filters (Lemma 4.1 on filter taps) and their least-squares fit.

Group lists and the grid-exactness test come from :mod:`symmetry.groups` only.
"""
