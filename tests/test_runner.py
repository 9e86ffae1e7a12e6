"""The experiment runner: resumable cells, atomic results, clear errors (experiments/runner.py)."""

from __future__ import annotations

import sys
import types

import pandas as pd
import pytest

from experiments import runner
from experiments.run import main as run_main
from experiments.runner import SkipCell, cell_key, run_experiment


@pytest.fixture
def fake(monkeypatch):
    """A registered experiment ``fake`` whose cells are counted; ``fail_on`` makes one cell raise."""
    mod = types.ModuleType("experiments.fake")
    mod.calls = []
    mod.fail_on = None

    def cells(config):
        return [{"x": x, "seed": config["seed"]} for x in config["xs"]]

    def run_cell(cell, ctx):
        mod.calls.append(cell["x"])
        if cell["x"] == mod.fail_on:
            raise KeyboardInterrupt
        if cell["x"] < 0:
            raise SkipCell("negative x needs data that is absent")
        return [{"y": cell["x"] ** 2 + cell["seed"], "k": k} for k in range(2)]

    mod.cells, mod.run_cell = cells, run_cell
    monkeypatch.setitem(sys.modules, "experiments.fake", mod)
    monkeypatch.setattr(runner, "EXPERIMENTS", (*runner.EXPERIMENTS, "fake"))
    return mod


def test_rerun_recomputes_nothing(fake, tmp_path):
    cfg = {"xs": [1, 2, 3], "seed": 10}
    first = run_experiment("fake", out=tmp_path, config=cfg, progress=False, log=lambda s: None)
    assert fake.calls == [1, 2, 3]
    assert sorted(first["y"]) == [11, 11, 14, 14, 19, 19]
    again = run_experiment("fake", out=tmp_path, config=cfg, progress=False, log=lambda s: None)
    assert fake.calls == [1, 2, 3]
    pd.testing.assert_frame_equal(first, again)
    assert set(first["cell"]) == {cell_key(c) for c in fake.cells(cfg)}


def test_interrupted_run_keeps_finished_cells_and_resumes(fake, tmp_path):
    cfg = {"xs": [1, 2, 3], "seed": 0}
    fake.fail_on = 2
    with pytest.raises(KeyboardInterrupt):
        run_experiment("fake", out=tmp_path, config=cfg, progress=False, log=lambda s: None)
    stored = pd.read_csv(tmp_path / "fake" / "quick.csv")
    assert sorted(stored["x"].unique()) == [1]
    fake.fail_on, fake.calls[:] = None, []
    frame = run_experiment("fake", out=tmp_path, config=cfg, progress=False, log=lambda s: None)
    assert fake.calls == [2, 3]
    assert sorted(frame["x"].unique()) == [1, 2, 3]


def test_changed_config_computes_only_new_cells_and_keeps_old_rows(fake, tmp_path):
    log = lambda s: None  # noqa: E731
    run_experiment("fake", out=tmp_path, config={"xs": [1, 2], "seed": 0}, progress=False, log=log)
    fake.calls[:] = []
    frame = run_experiment("fake", out=tmp_path, config={"xs": [2, 5], "seed": 0}, progress=False, log=log)
    assert fake.calls == [5]
    assert sorted(frame["x"].unique()) == [2, 5]  # only the current config's cells are returned
    stored = pd.read_csv(tmp_path / "fake" / "quick.csv")
    assert sorted(stored["x"].unique()) == [1, 2, 5]  # nothing written is lost


def test_force_recomputes_and_skipped_cells_are_not_stored(fake, tmp_path):
    cfg = {"xs": [-1, 4], "seed": 0}
    messages = []
    run_experiment("fake", out=tmp_path, config=cfg, progress=False, log=messages.append)
    assert any("skipped 1 cell" in m for m in messages)
    fake.calls[:] = []
    frame = run_experiment("fake", out=tmp_path, config=cfg, progress=False, log=messages.append)
    assert fake.calls == [-1]  # the skipped cell is tried again, the stored one is not
    assert list(frame["x"].unique()) == [4]
    fake.calls[:] = []
    run_experiment("fake", out=tmp_path, config=cfg, force=True, progress=False, log=messages.append)
    assert fake.calls == [-1, 4]
    assert len(pd.read_csv(tmp_path / "fake" / "quick.csv")) == 2  # replaced, not duplicated


def test_cells_see_the_data_root_of_the_one_rule(fake, tmp_path, monkeypatch):
    """The runner resolves --data-root by symmetry.locations.data_root, as every loader does (one rule, not two)."""
    from pathlib import Path

    from symmetry import locations

    roots = []
    fake.run_cell = lambda cell, ctx: roots.append(ctx.data_root) or [{"y": 0}]
    monkeypatch.setattr(locations, "DEVELOPMENT_DATA", tmp_path / "absent")
    monkeypatch.setenv("SYMMETRY_DATA", str(tmp_path / "env"))
    run_experiment("fake", out=tmp_path / "a", config={"xs": [1], "seed": 0}, progress=False, log=lambda s: None)
    monkeypatch.delenv("SYMMETRY_DATA")
    run_experiment("fake", out=tmp_path / "b", config={"xs": [1], "seed": 0}, progress=False, log=lambda s: None)
    kwargs = dict(config={"xs": [1], "seed": 0}, progress=False, log=lambda s: None, data_root="~/d")
    run_experiment("fake", out=tmp_path / "c", **kwargs)
    assert roots == [tmp_path / "env", locations.data_root(), Path.home() / "d"]
    assert roots[1] == Path.home() / ".cache" / "symmetry"


def test_cell_key_is_order_independent():
    assert cell_key({"a": 1, "b": [1, 2]}) == cell_key({"b": [1, 2], "a": 1})
    assert cell_key({"a": 1}) != cell_key({"a": 2})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nosuch", "--quick"], "unknown experiment 'nosuch'"),
        (["bound_lmmse", "--config", "/nonexistent.toml"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert run_main([*argv, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_cli_bad_config_and_results_folder_are_one_line(capsys, tmp_path):
    packaged = (runner.CONFIG_DIR / "bound_lmmse.toml").read_text()
    wrong_kind = tmp_path / "wrong_kind.toml"
    wrong_kind.write_text(packaged.replace("kappas = [", 'kappas = "x"\nunused = [', 1))
    missing = tmp_path / "missing.toml"
    missing.write_text("[quick]\nkappas = [0.0]\n")
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["--config", str(wrong_kind), "--results", str(tmp_path)], "kappas must be a list"),
        (["--config", str(missing), "--results", str(tmp_path)], "lacks family"),
        (["--max-cells", "-1", "--results", str(tmp_path)], "--max-cells must be >= 0"),
        (["--results", str(blocker / "results")], "cannot create the results folder"),
    ]
    for argv, message in cases:
        assert run_main(["bound_lmmse", "--quick", *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, err
    assert blocker.read_text() == "" and not (tmp_path / "bound_lmmse").exists()  # nothing written


def test_every_packaged_config_has_quick_and_full_tables():
    for name in runner.EXPERIMENTS:
        quick, full = runner.load_config(name, "quick"), runner.load_config(name, "full")
        module = runner.experiment_module(name)
        assert module.cells(quick) and module.cells(full), name
        keys = [cell_key(c) for c in module.cells(quick)]
        assert len(keys) == len(set(keys)), f"{name}: two quick cells share parameters"
        runner._check_like(full, quick, name)  # the two scales set the same keys, of the same kinds
        runner._check_like(quick, full, name)


def _hold_results_lock(path):
    """A second process holding the results lock of ``path`` until its stdin closes."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; from pathlib import Path; from experiments.runner import results_lock\n"
        f"with results_lock(Path({str(path)!r})):\n    print('held', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_on_one_results_folder_fails_at_once(fake, tmp_path, capsys):
    """Two runs writing one results folder: the second computes nothing and fails with one line (issue 13.9)."""
    from symmetry.errors import DataError

    config = {"xs": [1, 2, 3], "seed": 0}
    path = runner.results_path("fake", "quick", tmp_path)
    holder = _hold_results_lock(path)
    try:
        with pytest.raises(DataError, match="being written by another process"):
            run_experiment("fake", "quick", out=tmp_path, config=config, device="cpu", progress=False, log=lambda m: 0)
        assert fake.calls == [] and not path.exists()  # nothing computed, nothing written
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    frame = run_experiment("fake", "quick", out=tmp_path, config=config, device="cpu", progress=False, log=lambda m: 0)
    assert sorted(frame["x"].unique()) == [1, 2, 3] and fake.calls == [1, 2, 3]  # the lock is released after
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".lock")] == []


def test_cli_second_run_is_one_error_line(tmp_path, capsys):
    holder = _hold_results_lock(runner.results_path("symmetry_table", "quick", tmp_path))
    try:
        code = run_main(["symmetry_table", "--quick", "--results", str(tmp_path), "--max-cells", "1", "--quiet"])
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "being written by another process" in err
    assert "Traceback" not in err and not (tmp_path / "symmetry_table" / "quick.csv").exists()
