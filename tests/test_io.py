"""Atomic file output (symmetry/io.py): the old file survives a failure, and the new file gets the usual mode."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from symmetry.errors import DataError, UsageError
from symmetry.io import (
    atomic_path,
    atomic_write_text,
    check_distinct_outputs,
    check_writable,
    json_safe,
    output_lock,
    to_json,
)


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


# ---- symlinks, non-regular files, modes -------------------------------------------------------


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    target = tmp_path / "real" / "out.json"
    target.parent.mkdir()
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "link.json"
    link.symlink_to(target)
    atomic_write_text(link, "new")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(os.listdir(target.parent)) == ["out.json"] and sorted(os.listdir(tmp_path)) == ["link.json", "real"]
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "real" / "new.json")
    atomic_write_text(dangling, "made")
    assert dangling.is_symlink() and (tmp_path / "real" / "new.json").read_text() == "made"


@pytest.mark.parametrize("device", ["/dev/null", "/dev/full"])
def test_devices_are_refused_directly_and_through_a_link(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"{device} is absent")
    before = os.stat(device)
    link = tmp_path / "out.json"
    link.symlink_to(device)
    for path in (device, link):
        with pytest.raises(UsageError, match="is not a regular file"):
            atomic_write_text(path, "x")
        with pytest.raises(UsageError, match="is not a regular file"):
            check_writable(path, "--json")
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert link.is_symlink() and os.listdir(tmp_path) == ["out.json"]


def test_a_fifo_and_a_directory_are_refused(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="pipe is not a regular file"):
        atomic_write_text(fifo, "x")
    with pytest.raises(UsageError, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_proc_files_are_refused_before_work_and_at_write_time():
    if not os.path.exists("/proc/version"):
        pytest.skip("no /proc")
    before = open("/proc/version").read()
    with pytest.raises(UsageError, match="cannot write --json /proc/version"):
        check_writable("/proc/version", "--json")
    with pytest.raises(UsageError, match="cannot write /proc/version"):
        atomic_write_text("/proc/version", "x")
    assert open("/proc/version").read() == before


def test_a_full_disk_is_a_one_line_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.csv"
    path.write_text("old")

    def full(self, text):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(DataError, match="cannot write .*out.csv: No space left on device; the old file is kept"):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["out.csv"]


# ---- distinct outputs -----------------------------------------------------------------------


def test_two_outputs_of_one_command_must_differ(tmp_path):
    check_distinct_outputs(json=tmp_path / "a.json", csv=tmp_path / "a.csv", checkpoint=None)
    with pytest.raises(UsageError, match="--json and --csv both name .*same; one output would overwrite the other"):
        check_distinct_outputs(json=tmp_path / "same", csv=str(tmp_path / "same"))
    (tmp_path / "real").write_text("x")
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    os.link(tmp_path / "real", tmp_path / "hard")
    with pytest.raises(UsageError, match="--checkpoint and --json both name"):
        check_distinct_outputs(checkpoint=tmp_path / "real", json=tmp_path / "alias")
    with pytest.raises(UsageError, match="--out-dir and --csv"):
        check_distinct_outputs(out_dir=tmp_path / "hard", csv=tmp_path / "real")
    with pytest.raises(UsageError, match="--json and --csv"):
        check_distinct_outputs(json=tmp_path / "x" / ".." / "y", csv=tmp_path / "y")


# ---- concurrent writers ---------------------------------------------------------------------


def _hold_lock(path: str, ready, release) -> None:
    with output_lock(path):
        ready.set()
        release.wait(30)


def test_a_second_process_cannot_take_a_held_output_lock(tmp_path):
    path = tmp_path / "results.csv"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(DataError, match=rf"results.csv is being written by another process \(pid {holder.pid}"):
            with output_lock(path):
                pass
        with pytest.raises(DataError, match="being written by another process"):
            _write_with_short_wait(path)
        assert not path.exists()
    finally:
        release.set()
        holder.join(30)
    with output_lock(path), output_lock(path):  # free again, and reentrant
        atomic_write_text(path, "mine")
    assert path.read_text() == "mine" and os.listdir(tmp_path) == ["results.csv"]  # no lock file left


def _write_with_short_wait(path) -> None:
    import symmetry.io as sio

    saved, sio.WRITE_LOCK_WAIT = sio.WRITE_LOCK_WAIT, 0.2
    try:
        atomic_write_text(path, "lost?")
    finally:
        sio.WRITE_LOCK_WAIT = saved


def _slow_run(path: str, text: str, start, go) -> None:
    """A command: check the output before work, then write it after the work."""
    check_writable(path, "--json")
    start.set()
    go.wait(30)
    atomic_write_text(path, text)


def test_two_processes_writing_one_output_fail_loudly_instead_of_losing_work(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("before")
    ctx = multiprocessing.get_context("fork")
    start, go = ctx.Event(), ctx.Event()
    first = ctx.Process(target=_slow_run, args=(str(path), "first", start, go))
    first.start()
    assert start.wait(60)
    check_writable(path, "--json")  # the second run starts while the first is working
    go.set()
    first.join(60)
    assert first.exitcode == 0 and path.read_text() == "first"
    with pytest.raises(DataError, match=r"out.json was changed by another process while this one ran"):
        atomic_write_text(path, "second")
    kept = tmp_path / f"out.conflict-{os.getpid()}.json"
    assert path.read_text() == "first" and kept.read_text() == "second"  # neither result is lost


def test_a_process_rewriting_its_own_output_is_not_a_conflict(tmp_path):
    path = tmp_path / "log.csv"
    check_writable(path, "--csv")
    for step in range(3):
        atomic_write_text(path, f"step {step}")
    path.unlink()  # removed meanwhile: nothing to lose, the write goes ahead
    atomic_write_text(path, "again")
    assert path.read_text() == "again"


# ---- JSON ------------------------------------------------------------------------------------


def test_to_json_is_strict_nan_to_null_inf_to_string(tmp_path):
    text = to_json(
        {
            "a": float("nan"),
            "b": [1.5, float("inf"), -float("inf")],
            "c": (np.float64(2.0), np.int64(3)),
            "d": np.array([[1, 2]]),
            "e": tmp_path,
            "f": torch.tensor([0.5, float("nan")]),
            4: True,
        },
        indent=None,
    )
    assert json.loads(text) == {
        "a": None,
        "b": [1.5, "inf", "-inf"],
        "c": [2.0, 3],
        "d": [[1, 2]],
        "e": str(tmp_path),
        "f": [0.5, None],
        "4": True,
    }
    assert "NaN" not in text and "Infinity" not in text
    assert [float(v) for v in json.loads(text)["b"]] == [1.5, float("inf"), -float("inf")]  # readers use float()
    assert json_safe({"x": (float("nan"), 1)}) == {"x": [None, 1]}
    with pytest.raises(TypeError, match="cannot serialise object"):
        to_json({"x": object()})


def test_a_results_folder_is_locked_beside_itself(tmp_path):
    results = tmp_path / "results" / "bound"
    results.mkdir(parents=True)
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(results), ready, release))
    holder.start()
    try:
        assert ready.wait(60) and (tmp_path / "results" / ".bound.lock").is_file()
        with pytest.raises(DataError, match="bound is being written by another process"):
            with output_lock(results):
                pass
    finally:
        release.set()
        holder.join(30)
    with output_lock(results):
        atomic_write_text(results / "quick.csv", "a\n1\n")  # files inside a locked folder are written as usual
    assert sorted(os.listdir(tmp_path / "results")) == ["bound"]


@pytest.mark.parametrize("cli", ["alignment", "compare"])
def test_a_cli_whose_output_another_process_holds_fails_at_once(cli, tmp_path, capsys):
    """``symmetry.alignment --csv X`` or ``analysis.compare --csv X`` while another process writes X: one line."""
    import importlib

    from PIL import Image

    out = tmp_path / "table.csv"
    out.write_text("kept\n")
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(images / "a.png")
    argv = {
        "alignment": ["--dataset", f"folder:{images}", "--radius", "4", "--device", "cpu", "--csv", str(out)],
        "compare": [str(tmp_path), "--csv", str(out)],
    }[cli]
    (tmp_path / "config.json").write_text("{}")  # compare: a run folder (the lock is taken before its table is read)
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        main = importlib.import_module({"alignment": "symmetry.alignment", "compare": "analysis.compare"}[cli]).main
        code = main(argv)
    finally:
        release.set()
        holder.join(30)
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "being written by another process" in err, err
    assert out.read_text() == "kept\n"
