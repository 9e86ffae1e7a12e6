"""Command-line options every benchmark shares: ``--threads``, applied in one place, and positive whole numbers.

Nothing heavy is imported here, so a benchmark may set the thread counts before NumPy and torch load (OpenMP
and BLAS read the environment once, when they start); torch's own count is set in any case.
"""

from __future__ import annotations

import argparse
import os

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def positive_int(text: str) -> int:
    """``argparse`` type of a whole number >= 1 (``--threads``, ``--batch``, ...)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_threads_option(parser: argparse.ArgumentParser, default: int | None = None) -> None:
    """``--threads N``: CPU threads of torch, OpenMP and BLAS (``default`` None leaves the libraries' own)."""
    what = "the libraries' own" if default is None else str(default)
    parser.add_argument(
        "--threads", type=positive_int, default=default, help=f"CPU threads of torch, OpenMP and BLAS (unset: {what})"
    )


def use_threads(threads: int | None) -> None:
    """Pin OpenMP/BLAS threads (environment, for libraries not loaded yet) and torch's; ``None`` changes nothing."""
    if not threads:
        return
    for variable in THREAD_VARIABLES:
        os.environ[variable] = str(threads)
    import torch  # after the variables: OpenMP reads them when torch first loads

    torch.set_num_threads(threads)
