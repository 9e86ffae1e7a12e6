"""Benchmarks of the symmetry estimator and the restoration models (see docs/performance.md).

``python -m benchmarks.measure`` times the batched estimator against the slow, independent
reference in :mod:`benchmarks.reference`; ``python -m benchmarks.train_step`` times training
steps of the plain, equivariant and sample-adaptive models.
"""
