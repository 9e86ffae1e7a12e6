"""Restoration networks and how equivariant they are (theory.md, sections 2-3).

Submodules: ``basis``, ``layers``, ``models`` (``build_model``, ``count_parameters``, ``MODEL_KINDS``),
``model_registry`` (the table of model kinds), ``registry`` (``build_network`` by name), ``fit`` (the one
training loop), ``rundir`` (run-directory files, checkpoints, ``load_run``), ``train`` and ``evaluate`` (the
command lines), ``e2cnn_ref`` and ``equivariance`` (``equivariance_error``, ``summarize``).

Importing the package imports every module that defines a model kind, so the table of kinds is full
whichever submodule a caller imports first (BasicSR's ``archs/__init__.py``); e2cnn itself stays optional,
loaded only when an ``e2cnn`` network is built.
"""

from symmetry import interrupt

interrupt.install_for_package()  # `python -m analysis.X`: quiet Ctrl-C while the imports below run (seconds)

from analysis import e2cnn_ref, models  # noqa: E402, F401  (fill analysis.model_registry.MODELS)
