"""Restoration networks and how equivariant they are (theory.md, sections 2-3).

Submodules (imported on demand, nothing heavy here): ``basis``, ``layers``, ``models``
(``build_model``, ``count_parameters``, ``MODEL_KINDS``), ``registry`` (``build_network`` by name, lazily),
``fit`` (the one training loop), ``rundir`` (run-directory files, checkpoints, ``load_run``), ``train`` and
``evaluate`` (the command lines), ``e2cnn_ref`` and ``equivariance`` (``equivariance_error``, ``summarize``).
"""
