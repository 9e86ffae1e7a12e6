"""Experiments that reproduce the paper's bound and bias-variance results (one command per figure).

``python -m experiments.run NAME --quick`` computes results into ``results/NAME/``; ``python -m experiments.figures``
draws every figure into ``figures/``. See :mod:`experiments.runner` for how a run is split into resumable cells.
"""
