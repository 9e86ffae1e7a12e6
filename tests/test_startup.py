"""Start-up of the command line (issue 20): ``--help`` imports no torch and still lists the groups, datasets and
defaults, each from its one home (benchmarks/startup.py times it)."""

from __future__ import annotations

import contextlib
import io
import re

import pytest

from benchmarks.startup import help_modules
from symmetry import settings
from symmetry.groups import GROUP_NAMES_HELP
from symmetry.locations import DATA_ROOT_HELP


def test_help_imports_no_torch():
    """``python -m symmetry.measure --help`` in a fresh process; negative control: another entry point's ``--help``
    (symmetry.alignment imports torch at its top), seen by the same check, does import it."""
    assert "symmetry.cli" in help_modules("symmetry.measure")
    assert "torch" not in help_modules("symmetry.measure")
    assert "torch" in help_modules("symmetry.alignment")


def _help() -> str:
    from symmetry.measure import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    return " ".join(out.getvalue().split())  # argparse wraps lines: compare with single spaces


def _mentions(text: str, phrase: str) -> bool:
    return " ".join(phrase.split()) in text


def test_help_lists_groups_datasets_and_defaults():
    text = _help()
    for phrase in (
        GROUP_NAMES_HELP,
        DATA_ROOT_HELP,
        f"(default: {','.join(settings.GROUPS)})",
        f"(default: {settings.DATASET})",
        f"(default: {settings.Settings().features})",
        f"(default: {settings.Settings().permutations})",
        *("skimage", "folder:PATH", "div2k", "rain100l", "synthetic:FAMILY"),
        *settings.PRESETS,
        *settings.KERNELS,
    ):
        assert _mentions(text, phrase), phrase
    assert not _mentions(text, "rot4,flip,flipud,dih4,rot8 (default"), "negative control: a list the help does not show"
    assert re.search(r"--group GROUP", text)
