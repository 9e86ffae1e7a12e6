"""Honest run-time messages and reproducible outputs (issue 21): each check with the input it must reject."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments import runner
from experiments.runner import check_results, results_csv, run_experiment
from symmetry.errors import DataError, UsageError

ROOT = Path(__file__).resolve().parents[1]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# ---- figures drawn twice ----------------------------------------------------------------------


def _jittered(out: Path, seeded: bool) -> dict[str, str]:
    import contextlib

    import seaborn as sns

    from experiments.style import save_figure, seeded_global_rng, subplots

    frame = pd.DataFrame({"model": ["a", "b"] * 20, "gain": np.linspace(0, 1, 40)})
    with seeded_global_rng() if seeded else contextlib.nullcontext():
        fig, ax = subplots()
        sns.stripplot(frame, x="model", y="gain", ax=ax[0, 0])  # seaborn's jitter draws from numpy's global RNG
        save_figure(fig, out, "strip")
    return _digests(out)


def test_a_jittered_figure_drawn_twice_is_the_same_bytes(tmp_path):
    assert _jittered(tmp_path / "a", True) == _jittered(tmp_path / "b", True)


def test_without_the_seed_the_jitter_differs(tmp_path):
    """Negative control: the comparison above can fail (unseeded jitter changes the PNG and the PDF)."""
    np.random.seed(1)
    first = _jittered(tmp_path / "a", False)
    assert first != _jittered(tmp_path / "b", False)


@pytest.mark.slow  # draws every sa_alignment figure twice; the strip-plot test above covers the mechanism
def test_stored_figures_drawn_twice_are_the_same_bytes(tmp_path):
    from experiments.figures import make_figures

    try:  # the strip plot with jitter (sa_alignment-controls); results of another config cannot be drawn
        make_figures("sa_alignment", results=ROOT / "results", out=tmp_path / "a")
    except (UsageError, DataError) as err:
        pytest.skip(f"stored sa_alignment results do not match its config: {err}")
    make_figures("sa_alignment", results=ROOT / "results", out=tmp_path / "b")
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


# ---- experiments.run: computed and read cells, results checked on reading --------------------------


@pytest.fixture
def fake(monkeypatch):
    mod = types.ModuleType("experiments.fake")
    mod.cells = lambda config: [{"x": x} for x in config["xs"]]
    mod.run_cell = lambda cell, ctx: [{"y": cell["x"] ** 2, "k": k} for k in range(2)]
    monkeypatch.setitem(sys.modules, "experiments.fake", mod)
    monkeypatch.setattr(runner, "EXPERIMENTS", (*runner.EXPERIMENTS, "fake"))
    return mod


def test_run_says_which_cells_it_computed_and_which_it_read(fake, tmp_path):
    lines: list[str] = []
    run_experiment("fake", out=tmp_path, config={"xs": [1, 2, 3]}, progress=False, log=lines.append)
    assert "computed 3 cell(s), read 0 stored" in lines[-1]
    lines.clear()
    run_experiment("fake", out=tmp_path, config={"xs": [1, 2, 3, 4]}, progress=False, log=lines.append, max_cells=0)
    assert "computed 0 cell(s), read 3 stored" in lines[-1] and "1 cell(s) still to compute" in lines[-1]


def test_a_written_results_file_passes_its_own_check_and_an_edit_does_not(fake, tmp_path):
    frame = run_experiment("fake", out=tmp_path, config={"xs": [1, 2]}, progress=False, log=lambda s: None)
    path = tmp_path / "fake" / "quick.csv"
    text = path.read_text()
    check_results(path, text)  # positive control: what the runner writes is accepted
    assert text == results_csv(pd.read_csv(path))  # and reading it back and writing it again changes nothing
    with pytest.raises(DataError, match="does not match its digest"):
        check_results(path, text.replace(",4,", ",5,", 1))
    with pytest.raises(DataError, match="duplicate"):
        check_results(path, text + text.splitlines(keepends=True)[1])
    assert len(frame) == 4


def test_an_old_results_file_is_read_as_is_and_gets_digests_when_next_written(fake, tmp_path):
    (tmp_path / "fake").mkdir()
    old = "cell,x,y,k,cell_seconds\n" + "".join(
        f"{runner.cell_key({'x': x})},{x},{x * x},{k},0.1\n" for x in (1, 2) for k in range(2)
    )
    path = tmp_path / "fake" / "quick.csv"
    path.write_text(old)
    run_experiment("fake", out=tmp_path, config={"xs": [1, 2]}, progress=False, log=lambda s: None)
    assert path.read_text() == old  # nothing computed: a committed file is not rewritten by reading it
    run_experiment("fake", out=tmp_path, config={"xs": [1, 2, 3]}, progress=False, log=lambda s: None)
    assert runner.has_digests(path)
    stored = pd.read_csv(path)
    assert stored["cell_rows"].tolist() == [2] * 6  # the old rows got their cell's count too
    check_results(path, path.read_text())


def test_the_good_bound_results_are_read_and_the_damaged_refused(tmp_path, monkeypatch, capsys):
    """Positive control of the fuzz table's ``*-results-*`` rows: the undamaged copy they are made from is read."""
    kind = "emptied"
    from experiments.run import main
    from tests.test_fuzz_cli import _bad_results, _digested_results

    monkeypatch.chdir(tmp_path)
    (tmp_path / "good" / "bound").mkdir(parents=True)
    (tmp_path / "good" / "bound" / "quick.csv").write_text(_digested_results())
    assert main(["bound", "--quick", "--max-cells", "0", "--results", "good"]) == 0
    _bad_results(tmp_path)
    assert main(["bound", "--quick", "--max-cells", "0", "--results", f"res-{kind}"]) == 1
    assert "error: results res-" in capsys.readouterr().err


# ---- evaluation of an unfinished run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from analysis.config import TrainConfig
    from analysis.train import train

    base = tmp_path_factory.mktemp("runs")
    small = dict(data="skimage", max_images=3, steps=2, width=2, depth=1, patch_size=16, batch_size=2, val_images=0)
    train(TrainConfig(out=str(base / "done"), device="cpu", ckpt_every=1, **small))
    train(TrainConfig(out=str(base / "stopped"), device="cpu", ckpt_every=1, **small), stop_at=1)
    return base


@pytest.mark.parametrize("run, warned", [("stopped", True), ("done", False)])
def test_evaluating_a_run_that_stopped_early_warns(runs, run, warned, capsys):
    from analysis.evaluate import main

    assert main([str(runs / run), "--device", "cpu", "--quiet", "--max-images", "1", "--eq-images", "1"]) == 0
    err = capsys.readouterr().err
    assert ("stopped at step 1 of the 2 it planned" in err) is warned


# ---- help and text -------------------------------------------------------------------------------


def test_evaluate_help_names_each_default_once():
    from analysis.evaluate import build_parser

    text = build_parser().format_help()
    assert "(default: None)" not in text
    for line in text.split("\n  -"):
        assert line.count("default") <= 1, line


def test_tiny_symmetry_errors_read_as_one_number():
    from symmetry.report import _e3

    assert _e3(1.6e-8) == "1.6e-08"  # was "1.6e-05e-3"
    assert _e3(0.0123) == "12.300e-3"
    assert "e-05e" not in _e3(1.6e-8)


@pytest.mark.parametrize("split, noted", [(None, True), ("test", False)])
def test_a_dataset_with_splits_says_which_split_it_used(split, noted, capsys):
    from symmetry.command import default_split

    assert default_split("rain100l", split) == (split or "train")
    assert ("train split (the default" in capsys.readouterr().err) is noted
    default_split("folder:x", None)
    assert capsys.readouterr().err == ""


def test_train_download_flag_exists_where_the_div2k_error_suggests_it():
    from analysis.train import build_parser

    assert "--download" in build_parser().format_help()


# ---- presets and threads ---------------------------------------------------------------------------


def test_cpu_preset_sets_its_options_and_explicit_options_win():
    from analysis.config import PRESETS
    from analysis.train import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--preset", "cpu"]))
    assert all(getattr(cfg, k) == v for k, v in PRESETS["cpu"].items())
    assert config_from_args(build_parser().parse_args(["--preset", "cpu", "--width", "6"])).width == 6
    assert config_from_args(build_parser().parse_args([])).width != PRESETS["cpu"]["width"]  # the preset did it


def test_threads_default_to_one_per_process(monkeypatch):
    import torch

    from symmetry.runtime import set_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert set_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert set_threads() == 2
        assert set_threads(1) == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "many")
        with pytest.raises(UsageError, match="OMP_NUM_THREADS"):
            set_threads()
    finally:
        torch.set_num_threads(before)


# ---- make targets ------------------------------------------------------------------------------------


def test_make_notebooks_installs_the_extra_and_starts_jupyter_on_the_notebooks():
    res = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "notebooks"], cwd=ROOT, capture_output=True, text=True
    )
    if res.returncode != 0 and "No rule" not in res.stderr:
        pytest.skip(f"make is not usable here: {res.stderr[-200:]}")
    assert '-e ".[notebooks]"' in res.stdout
    assert res.stdout.strip().splitlines()[-1].split()[1:3] == ["lab", "notebooks/"]


def test_make_test_slow_runs_only_the_slow_tests():
    res = subprocess.run(["make", "--no-print-directory", "-n", "test-slow"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "pytest -q -m slow" in res.stdout
