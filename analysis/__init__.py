"""Restoration networks and how equivariant they are (theory.md, sections 2-3).

Submodules (imported on demand, nothing heavy here): ``basis``, ``layers``, ``models``
(``build_model``, ``count_parameters``, ``MODEL_KINDS``), ``e2cnn_ref`` and ``equivariance``
(``equivariance_error``, ``summarize``).
"""
