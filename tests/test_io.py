"""Atomic file output (symmetry/io.py): the old file survives a failure, and the new file gets the usual mode."""

from __future__ import annotations

import os
import stat

import pytest

from symmetry.io import atomic_path, atomic_write_text


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.csv"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.csv"]


def test_new_file_mode_follows_the_umask_and_an_old_file_keeps_its_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644  # not mkstemp's 0600
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    atomic_write_text(kept, "[]")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "[]"
